/* Training-state checkpoints: the pieces at_train (train.c) and the adversarial trainer
 * (adv_train.c) save after every epoch and restore on resume. A checkpoint is a model file (the
 * parameters under their PyTorch names, loadable like any other) with extra tensors named
 * "__train__.*" and one JSON object in the metadata key "advtrain.train_state". */
#ifndef ADVTRAIN_CHECKPOINT_H
#define ADVTRAIN_CHECKPOINT_H
#include "internal.h"

#include <cjson/cJSON.h>

enum { CKPT_MAX_TENSORS = 8 };
/* Bounds of what a checkpoint may hold (ckpt_get_int_in): epochs, and counters (ckpt_get_int
 * reads integers up to 2^53). */
#define CKPT_MAX_EPOCH 1000000
#define CKPT_MAX_COUNT 9007199254740992LL

/* One checkpoint being written (json, tensors) or read (json, file). */
typedef struct ckpt_state {
    cJSON *json;
    char *names[CKPT_MAX_TENSORS];
    at_st_entry tensors[CKPT_MAX_TENSORS];
    int ntensors;
    at_st_file *file;
    const char *path;
    bool failed; /* a put ran out of memory or slots */
} ckpt_state;

at_status ckpt_begin(ckpt_state *c);
/* Integers up to 2^53, exact; doubles exact (infinities and NaN included); RNG and 64-bit
 * counters as hex strings; float arrays as tensors (copied by reference: keep them alive until
 * ckpt_write). */
void ckpt_put_int(ckpt_state *c, const char *key, int64_t v);
void ckpt_put_num(ckpt_state *c, const char *key, double v);
void ckpt_put_u64(ckpt_state *c, const char *key, uint64_t v);
void ckpt_put_rng(ckpt_state *c, const char *key, const at_rng *r);
void ckpt_put_str(ckpt_state *c, const char *key, const char *v);
void ckpt_put_floats(ckpt_state *c, const char *name, const float *data, size_t count);
/* Writes the network and the state atomically to path, with extra metadata. */
at_status ckpt_write(ckpt_state *c, const at_net *net, const char *path, const at_st_meta *meta,
                     int nmeta);
void ckpt_end(ckpt_state *c);

/* Reads path (a checkpoint written by ckpt_write): the file and its state object. */
at_status ckpt_open(ckpt_state *c, const char *path);
/* Each getter fails with AT_ERR_FORMAT naming the file and the key when it is missing or wrong. */
at_status ckpt_get_int(const ckpt_state *c, const char *key, int64_t *v);
at_status ckpt_get_num(const ckpt_state *c, const char *key, double *v);
/* The same, and AT_ERR_FORMAT naming the key unless lo <= v <= hi: a corrupted counter must not
 * reach an int (where it would wrap) or a loop bound. */
at_status ckpt_get_int_in(const ckpt_state *c, const char *key, int64_t lo, int64_t hi, int64_t *v);
at_status ckpt_get_num_in(const ckpt_state *c, const char *key, double lo, double hi, double *v);
at_status ckpt_get_u64(const ckpt_state *c, const char *key, uint64_t *v);
at_status ckpt_get_rng(const ckpt_state *c, const char *key, at_rng *r);
const char *ckpt_get_str(const ckpt_state *c, const char *key); /* NULL when missing */
/* For what later versions added: a state key, a float array. */
bool ckpt_has(const ckpt_state *c, const char *key);
bool ckpt_has_floats(const ckpt_state *c, const char *name);
at_status ckpt_get_floats(const ckpt_state *c, const char *name, float *data, size_t count);

/* dir/name in buf; AT_ERR_ARG when it does not fit. */
at_status ckpt_path(char *buf, size_t cap, const char *dir, const char *name);
#endif
