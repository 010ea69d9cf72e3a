/* dscnn: MLPerf Tiny's keyword-spotting DS-CNN shape on image input. Its stem is a 64-channel
 * conv with stride 2, BN and ReLU (a 3x3 kernel here: the audio model's 10x4 kernel fits a
 * 49x10 spectrogram, not an image); then four depthwise-separable blocks, each a 3x3
 * depthwise conv (groups = 64) and a 1x1 pointwise conv with 64 channels, both followed by BN
 * and ReLU; dropout 0.2 after the stem and 0.4 before global average pooling, as MLPerf's
 * model; a linear layer. Convs before a BN have no bias (BN's shift replaces it). */
#include "models.h"

#include <stdio.h>

at_status at_model_dscnn(at_builder *b, const char *arg, int c, int h, int w) {
    if (h < 4 || w < 4)
        return at_fail(AT_ERR_SHAPE, "dscnn takes images of at least 4x4, the data is %dx%dx%d", c,
                       h, w);
    at_b_conv(b, "conv1", "", 64, 3, 2, 1, 1, false);
    at_b_bn(b, "bn1", "");
    at_b_relu(b, "");
    at_b_node(b, AT_LAYER_DROPOUT, "", "")->alpha = 0.2f;
    for (int k = 0; k < 4; k++) {
        char dw[32], bn_dw[32], pw[32], bn_pw[32];
        snprintf(dw, sizeof dw, "blocks.%d.dw", k);
        snprintf(bn_dw, sizeof bn_dw, "blocks.%d.bn_dw", k);
        snprintf(pw, sizeof pw, "blocks.%d.pw", k);
        snprintf(bn_pw, sizeof bn_pw, "blocks.%d.bn_pw", k);
        at_b_conv(b, dw, "", 64, 3, 1, 1, 64, false);
        at_b_bn(b, bn_dw, "");
        at_b_relu(b, "");
        at_b_conv(b, pw, "", 64, 1, 1, 0, 1, false);
        at_b_bn(b, bn_pw, "");
        at_b_relu(b, "");
    }
    at_b_node(b, AT_LAYER_DROPOUT, "", "")->alpha = 0.4f;
    at_b_simple(b, AT_LAYER_GLOBALAVGPOOL);
    at_b_simple(b, AT_LAYER_FLATTEN);
    at_b_linear(b, "fc", 10);
    return AT_OK;
}
