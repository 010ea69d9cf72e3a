/* Helpers shared by the fuzz targets (tests/fuzz/fuzz_*.c) and the seed generator.
 *
 * The library's loaders take paths, so each target writes its input to a file in a temporary
 * directory of its own process and calls the public loader on it. The directory lies under
 * $ADVTRAIN_FUZZ_TMP (scripts/fuzz.sh sets it and removes it afterwards), else /dev/shm (no disk
 * traffic), else /tmp. A failure of the harness itself (a full disk) aborts: it is not a finding
 * about the library, and it must not pass silently either. */
#ifndef ADVTRAIN_FUZZ_COMMON_H
#define ADVTRAIN_FUZZ_COMMON_H
#include "advtrain.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* This process's scratch directory (created on first use, emptied at exit). The first call also
 * sets the library to one thread: inputs are tiny, and runs stay deterministic. */
const char *fuzz_dir(void);
/* fuzz_dir()/name into buf (aborts when it does not fit). */
void fuzz_path(char *buf, size_t cap, const char *name);
/* Writes n bytes to path, plainly or gzip-compressed (zlib's gzwrite); aborts on failure. */
void fuzz_write(const char *path, const void *data, size_t n);
void fuzz_write_gz(const char *path, const void *data, size_t n);
/* Removes path if it exists. */
void fuzz_remove(const char *path);
/* Aborts with a message: an invariant the library promises was broken. */
void fuzz_fail(const char *what, const char *detail);

/* The library must leave a clear message on every failure: aborts if s != AT_OK and
 * at_error_message() is empty. With ADVTRAIN_FUZZ_VERBOSE set, prints the status and message. */
void fuzz_check_message(at_status s, const char *call);

/* Floats one sample takes in the network's activations and its convolutions' padded inputs: what
 * the harness bounds before running a network (a big network is valid, but too slow to run per
 * input). */
int64_t fuzz_sample_floats(const at_net *net);

/* Runs the network once on one zero sample (at_net_predict) when its activations are small
 * enough for a fuzzing run (the limit is the harness's, not the library's); aborts if the
 * prediction fails for another reason than memory. */
void fuzz_predict_small(at_net *net);

/* The training run of the checkpoint target (fuzz_checkpoint.c) and of its seeds: a "linear:4"
 * network on 12 synthetic 4-feature samples of 4 classes, checkpoints in dir, two epochs.
 * variant 0: SGD with momentum; variant 1: Adam with FGSM-RS adversarial training, a validation
 * set and early stopping (every piece of state a checkpoint can hold). stop_after_batches > 0
 * stops the run mid-epoch after that many batches (a checkpoint with the epoch's partial sums). */
at_status fuzz_train_run(const char *dir, int variant, bool resume, int stop_after_batches);
#endif
