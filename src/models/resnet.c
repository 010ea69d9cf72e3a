/* Residual networks with BatchNorm.
 *
 * resnet8: MLPerf Tiny's image-classification ResNet-8 (resnet_v1_eembc in its Keras
 * training code): a 3x3 conv with 16 channels, BN and ReLU, then three stacks of two 3x3 convs
 * (16, 32, 64 channels; the second and third start with stride 2), each conv followed by BN,
 * the residual added before the stack's last ReLU; at the stride-2 stacks the shortcut is a 1x1
 * conv with stride 2 (without BN, as in MLPerf's model); global average pooling, a linear
 * layer. Convs keep their bias (Keras' default there). Padding is PyTorch's symmetric 1 where
 * Keras writes 'same'.
 *
 * preact-resnet18: the PreActResNet18 of Wong et al., "Fast is better than free" (their
 * preact_resnet.py): bias-free convs, each block bn1-relu-conv1-bn2-relu-conv2 plus a shortcut
 * (a 1x1 conv of the first ReLU's output where the shape changes, else the block input), a
 * final bn-relu, average pooling to 1x1 and `linear`. "preact-resnet18:W" sets the first
 * stage's width W (64 in the paper; stages W, 2W, 4W, 8W) so that a narrow one trains on a
 * CPU. */
#include "models.h"

#include <stdio.h>
#include <stdlib.h>

static at_status check_image(const char *model, int c, int h, int w) {
    if (h < 8 || w < 8 || h > 1024 || w > 1024)
        return at_fail(AT_ERR_SHAPE, "%s takes images of at least 8x8, the data is %dx%dx%d", model,
                       c, h, w);
    return AT_OK;
}

/* One MLPerf stack: conv-bn-relu-conv-bn, plus the input or its 1x1 projection, then ReLU. */
static void resnet8_stack(at_builder *b, int k, int out, int stride, const char *input) {
    char name[5][32];
    snprintf(name[0], 32, "layer%d.conv1", k);
    snprintf(name[1], 32, "layer%d.bn1", k);
    snprintf(name[2], 32, "layer%d.conv2", k);
    snprintf(name[3], 32, "layer%d.bn2", k);
    snprintf(name[4], 32, "layer%d.shortcut", k);
    at_b_conv(b, name[0], input, out, 3, stride, 1, 1, true);
    at_b_bn(b, name[1], "");
    at_b_relu(b, "");
    at_b_conv(b, name[2], "", out, 3, 1, 1, 1, true);
    at_b_bn(b, name[3], "");
    const char *shortcut = input;
    if (stride != 1) {
        at_b_conv(b, name[4], input, out, 1, stride, 0, 1, true);
        shortcut = name[4];
    }
    at_b_add(b, "", name[3], shortcut);
    snprintf(name[0], 32, "layer%d", k);
    at_b_relu(b, name[0]); /* the stack's output, named for the next stack's shortcut */
}

at_status at_model_resnet8(at_builder *b, const char *arg, int c, int h, int w) {
    at_status s = check_image("resnet8", c, h, w);
    if (s != AT_OK) return s;
    at_b_conv(b, "conv1", "", 16, 3, 1, 1, 1, true);
    at_b_bn(b, "bn1", "");
    at_b_relu(b, "stem");
    resnet8_stack(b, 1, 16, 1, "stem");
    resnet8_stack(b, 2, 32, 2, "layer1");
    resnet8_stack(b, 3, 64, 2, "layer2");
    at_b_simple(b, AT_LAYER_GLOBALAVGPOOL);
    at_b_simple(b, AT_LAYER_FLATTEN);
    at_b_linear(b, "fc", 10);
    return AT_OK;
}

/* One PreActBlock named prefix ("layer2.0") reading `input`; its output is named `out`. */
static void preact_block(at_builder *b, const char *prefix, const char *input, int in_planes,
                         int planes, int stride, const char *out) {
    char n[6][64];
    const char *suffix[] = {"bn1", "relu1", "conv1", "bn2", "conv2", "shortcut.0"};
    for (int i = 0; i < 6; i++) snprintf(n[i], sizeof n[i], "%s.%s", prefix, suffix[i]);
    at_b_bn(b, n[0], input);
    at_b_relu(b, n[1]);
    at_b_conv(b, n[2], "", planes, 3, stride, 1, 1, false);
    at_b_bn(b, n[3], "");
    at_b_relu(b, "");
    at_b_conv(b, n[4], "", planes, 3, 1, 1, 1, false);
    const char *shortcut = input;
    if (stride != 1 || in_planes != planes) {
        at_b_conv(b, n[5], n[1], planes, 1, stride, 0, 1, false);
        shortcut = n[5];
    }
    at_b_add(b, out, n[4], shortcut);
}

static at_status parse_width(const char *arg, int *width) {
    *width = 64;
    if (!arg) return AT_OK;
    char *end;
    long v = strtol(arg, &end, 10);
    if (end == arg || *end || v < 1 || v > 1024)
        return at_fail(AT_ERR_ARG, "preact-resnet18:%s: the width must be a whole number from 1 to "
                       "1024 (64 in the paper)", arg);
    *width = (int)v;
    return AT_OK;
}

at_status at_model_preact_resnet18(at_builder *b, const char *arg, int c, int h, int w) {
    int W;
    at_status s = parse_width(arg, &W);
    if (s == AT_OK) s = check_image("preact-resnet18", c, h, w);
    if (s != AT_OK) return s;
    at_b_conv(b, "conv1", "", W, 3, 1, 1, 1, false);
    char input[64] = "conv1", prefix[16], out[64];
    int in_planes = W;
    for (int stage = 0; stage < 4; stage++)
        for (int block = 0; block < 2; block++) {
            const int planes = W << stage, stride = stage > 0 && block == 0 ? 2 : 1;
            snprintf(prefix, sizeof prefix, "layer%d.%d", stage + 1, block);
            snprintf(out, sizeof out, "%s.out", prefix);
            preact_block(b, prefix, input, in_planes, planes, stride, out);
            snprintf(input, sizeof input, "%s", out);
            in_planes = planes;
        }
    at_b_bn(b, "bn", "");
    at_b_relu(b, "");
    at_b_simple(b, AT_LAYER_GLOBALAVGPOOL);
    at_b_simple(b, AT_LAYER_FLATTEN);
    at_b_linear(b, "linear", 10);
    return AT_OK;
}
