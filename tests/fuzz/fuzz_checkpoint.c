/* Fuzz target: checkpoint state (at_train resuming from DIR/last.safetensors).
 *
 * The input is DIR/last.safetensors; two tiny training runs resume from it (fuzz_common.c: SGD
 * with momentum, and Adam with FGSM-RS adversarial training, a validation set, early stopping
 * and a plateau schedule, so that every piece of state a checkpoint holds is read). Each must
 * fail cleanly, with a message, or finish its two epochs. at_checkpoint_progress reads the file
 * first, as `advtrain fit --resume` does to say where it resumes. */
#define _POSIX_C_SOURCE 200809L /* mkdir */
#include "fuzz_common.h"

#include <stdio.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char dir[512], path[600];
    fuzz_path(dir, sizeof dir, "run");
    mkdir(dir, 0777);
    snprintf(path, sizeof path, "%s/last.safetensors", dir);
    for (int variant = 0; variant < 2; variant++) {
        /* A successful run rewrites the checkpoint: each variant starts from the input. */
        fuzz_write(path, data, size);
        int epoch, batches;
        fuzz_check_message(at_checkpoint_progress(dir, &epoch, &batches), "at_checkpoint_progress");
        at_status s = fuzz_train_run(dir, variant, true, 0);
        if (s == AT_ERR_INTERRUPTED) fuzz_fail("a run without a stop request was interrupted", NULL);
    }
    return 0;
}
