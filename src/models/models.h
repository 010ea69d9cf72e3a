/* Built-in models: each file builds its architectures as layer descriptions through a small
 * builder; builtin.c lists them by name. Names of the nodes with parameters are the PyTorch
 * module names of tools/torch_models.py, so state_dicts load both ways. */
#ifndef ADVTRAIN_MODELS_H
#define ADVTRAIN_MODELS_H
#include "internal.h"

typedef struct at_builder {
    at_layer_desc *L;
    int n, cap;
    bool full; /* a node did not fit: the build fails */
} at_builder;

/* Appends a node of `kind` named `name` ("" for an unnamed, parameterless node) reading
 * `input` ("" = the node before); returns it to fill in (a scratch node once full). */
at_layer_desc *at_b_node(at_builder *b, at_layer_kind kind, const char *name, const char *input);
/* The nodes the models use, with PyTorch's arguments. */
void at_b_conv(at_builder *b, const char *name, const char *input, int out, int kernel, int stride,
               int pad, int groups, bool bias);
void at_b_linear(at_builder *b, const char *name, int out);
void at_b_bn(at_builder *b, const char *name, const char *input);
void at_b_relu(at_builder *b, const char *name);
void at_b_add(at_builder *b, const char *name, const char *a, const char *c);
void at_b_simple(at_builder *b, at_layer_kind kind); /* flatten, gap, ... : unnamed */

/* A model: fills b for input (c, h, w) and an optional argument after the name ("16" in
 * "preact-resnet18:16", NULL if none); AT_OK or the error. */
typedef at_status (*at_model_fn)(at_builder *b, const char *arg, int c, int h, int w);

at_status at_model_seed_mlp(at_builder *b, const char *arg, int c, int h, int w);
at_status at_model_seed_cnn(at_builder *b, const char *arg, int c, int h, int w);
at_status at_model_mlp(at_builder *b, const char *arg, int c, int h, int w);
at_status at_model_smallcnn(at_builder *b, const char *arg, int c, int h, int w);
at_status at_model_resnet8(at_builder *b, const char *arg, int c, int h, int w);
at_status at_model_preact_resnet18(at_builder *b, const char *arg, int c, int h, int w);
at_status at_model_dscnn(at_builder *b, const char *arg, int c, int h, int w);

/* The built-in models' names, comma-separated (for messages). */
void at_builtin_names(char *buf, size_t cap);
/* Builds the built-in model `spec` names into L (capacity cap); *n receives the count. */
at_status at_builtin_layers(const char *spec, int c, int h, int w, at_layer_desc *L, int cap, int *n);
#endif
