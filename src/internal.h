/* Helpers shared inside the library; not part of the public API. */
#ifndef ADVTRAIN_INTERNAL_H
#define ADVTRAIN_INTERNAL_H
#include "advtrain.h"
#include <stdlib.h>

/* Allocation that records a clear error on failure. */
void *at_alloc(size_t bytes, const char *what);
void *at_calloc(size_t count, size_t size, const char *what);
/* Threads for an elementwise pass over `rows` independent rows holding `floats` values in all:
 * one when the pass is too small to share. No row's result may depend on it. */
int at_rows_threads(int rows, size_t floats);
/* Part t of T of n floats, [*lo, *hi): contiguous, the boundaries on 16-float (cache line)
 * multiples, together covering [0, n). */
void at_split_range(size_t n, int t, int T, size_t *lo, size_t *hi);
/* 64-byte aligned, zeroed; free with free(). */
float *at_alloc_floats(size_t count, const char *what);
/* Data-parallel training (graph.c): a training pass's BatchNorm sums are added over comm's ranks
 * (SyncBatchNorm), and its samples are the global batch's from sample_offset on (dropout draws
 * by global index). comm NULL, offset 0: this process alone. */
void at_net_share(at_net *net, const at_comm *comm, int sample_offset);
/* Certified training (certify/schedule.c): eps and the clean loss's weight kappa at a training
 * step; the configuration's checks. */
/* Where certified training stands at a step: the radius, the clean loss's weight, CROWN-IBP's
 * share of the bounds (0 for IBP). */
typedef struct certify_point {
    float eps, kappa, beta;
} certify_point;
void certify_schedule(const at_certify_config *c, int64_t step, int nbatches, certify_point *p);
at_status certify_check(const at_train_config *cfg, const at_dataset *train, const at_net *net);
/* Whether at_certified_loss can train this network (certify/ibp_loss.c), with CROWN-IBP or not:
 * AT_ERR_ARG saying why not. */
at_status certified_check_network(const at_net *net, bool crown);

/* Duplicates a string (NULL on failure, with the error set). */
char *at_strdup(const char *s);


/* AT_ERR_ARG naming the first label outside [0, k), else AT_OK. */
at_status at_check_labels(const int32_t *labels, int n, int k);

/* One row of at_cross_entropy (label smoothing eps, mean over n rows): writes the row's dlogits
 * to d (if not NULL) and returns its loss, unscaled. */
double at_ce_row(const float *z, int label, int k, double eps, int n, float *d);

/* BatchNorm's eps (PyTorch's default), for the layer and for what folds it (int8, C export). */
#define AT_BN_EPS 1e-5

/* Training state that checkpoints save and restore (see checkpoint.c). */
uint64_t at_net_forward_count(const at_net *net); /* dropout masks are keyed by it */
void at_net_set_forward_count(at_net *net, uint64_t count);
void at_optim_set_steps(at_optim *opt, int64_t steps); /* Adam's bias correction */
/* Free-AT's perturbation, carried from batch to batch and epoch to epoch: *count floats. */
float *at_adv_workspace_delta(at_adv_workspace *ws, size_t *count);
/* at_model_save with extra tensors after the parameters (training state in checkpoints). */
at_status at_model_save_with(const at_net *net, const char *path, const at_st_meta *extra, int nextra,
                             const at_st_entry *tensors, int ntensors);

/* Reads model file path (*f) and builds the float network (parameters zero) its advtrain.arch and
 * advtrain.input metadata describe, bounded by the file's values: an int8 model file (metadata
 * advtrain.format = int8) when int8, else a float one; the other kind is refused by name. On
 * failure nothing is left to free (model.c). */
at_status at_model_open(const char *path, bool int8, at_st_file **f, at_net **net);

/* at_net_create and at_net_from_spec that fail with AT_ERR_FORMAT, before allocating the
 * parameters, when the parameters and buffers would take more than max_floats floats: a model
 * file's network can hold no more values than the file (io/model.c). */
at_status at_net_create_bounded(at_net **out, const at_layer_desc *layers, int nlayers, int in_c,
                                int in_h, int in_w, size_t max_floats);
at_status at_net_from_spec_bounded(at_net **out, const char *spec, int in_c, int in_h, int in_w,
                                   size_t max_floats);

/* Atomic write (io/atomic_file.c): write() fills the temporary file fp; on success it replaces
 * path, else path is untouched and the temporary file removed. */
#include <stdio.h>
typedef at_status (*at_write_fn)(FILE *fp, const char *path, const char *tmp, void *user);
at_status at_write_atomic_with(const char *path, at_write_fn write, void *user);
/* The pieces, for writers that commit several files together (the C export's .h/.c pair): a
 * temporary file next to path (mode of the file it replaces, else 0666 less the umask); flush,
 * fsync and close it; after the renames, fsync the directory (best effort). */
at_status at_temp_open(const char *path, char **tmp, FILE **fp);
at_status at_temp_close(const char *path, const char *tmp, FILE *fp);
void at_sync_parent_dir(const char *path);

/* The files of a C export written together (io/export_files.c): DIR/PREFIX + suffixes[f] for
 * f < nfiles, each filled by write(fp, f, user) into a temporary file; all renamed only when
 * every one is complete. DIR is created when missing; PREFIX must be a C identifier of at most
 * AT_EXPORT_MAX_PREFIX characters (at_export_prefix_ok). */
#define AT_EXPORT_MAX_PREFIX 64
#define AT_EXPORT_MAX_FILES 4
typedef at_status (*at_export_write_fn)(FILE *fp, int file, void *user);
bool at_export_prefix_ok(const char *prefix);
/* AT_ERR_ARG with a message unless dir is given and prefix is a valid one. */
at_status at_export_check(const char *dir, const char *prefix);
at_status at_export_files(const char *dir, const char *prefix, const char *const *suffixes, int nfiles,
                          at_export_write_fn write, void *user);

#define AT_MIN(a, b) ((a) < (b) ? (a) : (b))
#define AT_MAX(a, b) ((a) > (b) ? (a) : (b))
#endif
