/* The direct convolution path (conv2d_direct.c) that conv2d.c hands small stride-1 layers to. */
#ifndef ADVTRAIN_CONV2D_DIRECT_H
#define ADVTRAIN_CONV2D_DIRECT_H
#include "layer.h"

/* True when the layer is small enough for the direct path to beat im2row + GEMM. */
bool at_conv2d_direct_applies(const at_layer *L);
size_t at_conv2d_direct_workspace(const at_layer *L);
void at_conv2d_direct_forward(const at_layer *L, const at_ctx *ctx, const float *x, float *y,
                              int n);
/* y: the layer's output, which masks dy when the layer applies a fused ReLU (L->relu_out). */
void at_conv2d_direct_backward(const at_layer *L, const at_ctx *ctx, const float *x,
                               const float *y, const float *dy, float *dx, int n,
                               bool param_grads);
#endif
