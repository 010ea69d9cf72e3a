/* Adversarial training as the training loop (train.c) drives it; see src/adv_train.c. */
#ifndef ADVTRAIN_ADV_TRAIN_H
#define ADVTRAIN_ADV_TRAIN_H
#include "checkpoint.h"

typedef struct adv_trainer adv_trainer;

/* Checks cfg->adv and allocates everything the run needs (nothing is allocated per step). */
at_status adv_trainer_create(adv_trainer **out, at_net *net, at_optim *opt,
                             const at_train_config *cfg, const at_dataset *train,
                             const at_dataset *val, int nbatches);
void adv_trainer_free(adv_trainer *t);
/* Gradient computations per batch: the number of replays (free), else 1. */
int adv_trainer_replays(const adv_trainer *t);
/* eps for training step `step` (0-based) after the linear warm-up. */
float adv_trainer_eps(const adv_trainer *t, int64_t step);
/* Adds the method's batch gradient times scale (the caller zeroes the buffer first; scale is
 * 1 but for a data-parallel slice: its share of the global batch). The n samples are samples
 * index, index + 1, ... of the epoch's order: their random starts are drawn from that (with the
 * run's seed and the epoch), whatever slice of whichever batch they are in.
 * *correct counts hits on the inputs the loss is about (clean for fgsm and trades),
 * *adv_correct hits on adversarial examples (-1 for trades, which does not count them). */
at_status adv_trainer_gradients(adv_trainer *t, const float *x, const int32_t *y, const float *soft,
                                int n, int epoch, int64_t index, float eps, float scale, float *loss,
                                int *correct, int *adv_correct);
/* After an epoch: the FGSM-RS guard, the robust validation and best-epoch bookkeeping. */
at_status adv_trainer_end_epoch(adv_trainer *t, int epoch, at_epoch_stats *st);
/* Keeps the current weights as the last good ones (the guard restores them on a collapse). */
void adv_trainer_snapshot_good(adv_trainer *t);
/* Checkpoints: the trainer's state (method, step, best and last good weights, RNG). */
void adv_trainer_save_state(adv_trainer *t, ckpt_state *c);
at_status adv_trainer_load_state(adv_trainer *t, const ckpt_state *c);
/* Restores the best robust epoch's weights; returns that epoch (0 if none was selected). */
int adv_trainer_finish(adv_trainer *t);
#endif
