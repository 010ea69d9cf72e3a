/* Grouped convolutions (conv2d_grouped.c), which conv2d.c hands every layer with groups > 1:
 * depthwise (groups = in_channels, MobileNet's and DS-CNN's) and general groups. */
#ifndef ADVTRAIN_CONV2D_GROUPED_H
#define ADVTRAIN_CONV2D_GROUPED_H
#include "layer.h"

/* The layer's group count: 0 (a zero-filled description) and 1 both mean a dense convolution. */
static inline int at_conv2d_groups(const at_layer *L) { return L->d.groups > 1 ? L->d.groups : 1; }

size_t at_conv2d_grouped_workspace(const at_layer *L, int n);
void at_conv2d_grouped_forward(const at_layer *L, const at_ctx *ctx, const float *x, float *y,
                               int n);
/* y: the layer's output, which gates dy when the layer applies a fused ReLU (L->relu_out). */
void at_conv2d_grouped_backward(const at_layer *L, const at_ctx *ctx, const float *x,
                                const float *y, const float *dy, float *dx, int n,
                                bool param_grads);
#endif
