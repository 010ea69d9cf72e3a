/* The chains advtrain started with: the tutorial's models (seed-mlp, seed-cnn) and two small
 * ones for Fashion-MNIST (mlp, smallcnn, named by position as nn.Sequential names them). */
#include "models.h"

static void maxpool2(at_builder *b) {
    at_layer_desc *d = at_b_node(b, AT_LAYER_MAXPOOL2D, "pool", "");
    d->kernel = d->stride = 2;
}

static void conv(at_builder *b, const char *name, int out, int k, int stride, int pad) {
    at_b_conv(b, name, "", out, k, stride, pad, 1, true);
}

at_status at_model_seed_mlp(at_builder *b, const char *arg, int c, int h, int w) {
    /* The tutorial's Net: fc2(fc1(x)), no activation in between. */
    if (c * h * w != 10)
        return at_fail(AT_ERR_SHAPE, "seed-mlp takes 10 input features, the data has %d", c * h * w);
    at_b_simple(b, AT_LAYER_FLATTEN);
    at_b_linear(b, "fc1", 50);
    at_b_linear(b, "fc2", 10);
    return AT_OK;
}

at_status at_model_seed_cnn(at_builder *b, const char *arg, int c, int h, int w) {
    /* The tutorial's LeNet. conv1 pads so that the flattened size stays 16*5*5 = 400: 32x32
     * (CIFAR-10) needs none, 28x28 needs 2. */
    if (h != w || h > 32 || (32 - h) % 2 != 0)
        return at_fail(AT_ERR_SHAPE,
                       "seed-cnn needs square images of even size up to 32 (28x28 or 32x32), got "
                       "%dx%d",
                       h, w);
    conv(b, "conv1", 6, 5, 1, (32 - h) / 2);
    at_b_relu(b, "");
    maxpool2(b);
    conv(b, "conv2", 16, 5, 1, 0);
    at_b_relu(b, "");
    maxpool2(b);
    at_b_simple(b, AT_LAYER_FLATTEN);
    at_b_linear(b, "fc1", 120);
    at_b_relu(b, "");
    at_b_linear(b, "fc2", 84);
    at_b_relu(b, "");
    at_b_linear(b, "fc3", 10);
    return AT_OK;
}

at_status at_model_mlp(at_builder *b, const char *arg, int c, int h, int w) {
    if (c * h * w != 784)
        return at_fail(AT_ERR_SHAPE, "mlp takes 784 inputs (28x28 grey images), the data has %d",
                       c * h * w);
    at_b_node(b, AT_LAYER_FLATTEN, "0", "");
    at_b_linear(b, "1", 256);
    at_b_relu(b, "2");
    at_b_linear(b, "3", 128);
    at_b_relu(b, "4");
    at_b_linear(b, "5", 10);
    return AT_OK;
}

at_status at_model_smallcnn(at_builder *b, const char *arg, int c, int h, int w) {
    if (c != 1 || h != 28 || w != 28)
        return at_fail(AT_ERR_SHAPE, "smallcnn takes 1x28x28 images, the data is %dx%dx%d", c, h, w);
    conv(b, "0", 16, 4, 2, 1);
    at_b_relu(b, "1");
    conv(b, "2", 32, 4, 2, 1);
    at_b_relu(b, "3");
    at_b_node(b, AT_LAYER_FLATTEN, "4", "");
    at_b_linear(b, "5", 100);
    at_b_relu(b, "6");
    at_b_linear(b, "7", 10);
    return AT_OK;
}
