/* Watching a fit run epoch by epoch for the two failures the loss alone shows:
 *
 * - explosion: the library stops on NaN only, but a loss of 1e27 is as lost and the run would
 *   save that model and exit 0. A K-class model starts near ln K; an epoch's mean cross-entropy
 *   above 1000 ln K means the correct class gets probability e^-1000 on average, which no
 *   learning run reaches. Regression has no such scale: there the bound is 1e4 times the first
 *   epoch's loss.
 * - a run that never starts learning: loss stuck at ln K (uniform outputs) with chance accuracy
 *   (one predicted class) for several epochs, typically PGD-AT at a large eps from epoch 1. The
 *   accuracy stands in for "one predicted class": counting predictions would need extra forward
 *   passes, which advance the network's forward counter and would break bit-identical resume. */
#include "fit_watch.h"

#include <math.h>

enum { STALL_EPOCHS = 3 };

void watch_init(fit_watch *w, int classes, int epochs) {
    w->classes = classes;
    w->first_loss = NAN;
    w->stalled = 0;
    w->stall_after = epochs < STALL_EPOCHS ? (epochs >= 2 ? epochs : STALL_EPOCHS) : STALL_EPOCHS;
    w->warned = false;
}

/* Mean loss at which the run has certainly diverged. */
static double explosion_bound(const fit_watch *w) {
    if (w->classes >= 2) return 1e3 * log((double)w->classes);
    return isnan(w->first_loss) ? INFINITY : 1e4 * fmax(w->first_loss, 1e-6);
}

static bool stalled_epoch(const fit_watch *w, const at_epoch_stats *s) {
    if (w->classes < 2) return false;
    const double lnk = log((double)w->classes), chance = 1.0 / w->classes;
    /* the held-out accuracy when there is one: the training one is running, and adversarial */
    double acc = !isnan(s->test_metric) ? s->test_metric : !isnan(s->val_metric) ? s->val_metric : s->train_metric;
    return fabs(s->train_loss - lnk) < 0.02 * lnk && acc < 1.5 * chance;
}

watch_event watch_epoch(fit_watch *w, const at_epoch_stats *s) {
    bool first = isnan(w->first_loss);
    if (s->train_loss > explosion_bound(w)) return WATCH_EXPLODED;
    if (first) w->first_loss = s->train_loss;
    w->stalled = stalled_epoch(w, s) ? w->stalled + 1 : 0;
    if (w->stalled >= w->stall_after && !w->warned) {
        w->warned = true;
        return WATCH_STALLED;
    }
    return WATCH_OK;
}

void watch_explain_explosion(const fit_watch *w, const at_epoch_stats *s, float lr, const char *checkpoint_dir,
                             FILE *f) {
    fprintf(f, "advtrain fit: training exploded at epoch %d: loss %.3g", s->epoch, (double)s->train_loss);
    if (w->classes >= 2)
        fprintf(f, " (a %d-class model starts near ln %d = %.2f; above %.0f it has diverged)", w->classes,
                w->classes, log((double)w->classes), explosion_bound(w));
    else
        fprintf(f, " (10000 times the first epoch's %.3g)", (double)w->first_loss);
    fprintf(f, ". Stopped; no model saved.\n  What usually fixes it: a smaller --lr (this run: %g; try %g), "
               "or --clip-grad 1.\n", (double)lr, (double)lr / 10.0);
    /* The library saves the epoch's checkpoint after the callback that stopped it, and a resume
     * keeps the checkpoint's learning rate: only a new run helps. */
    if (checkpoint_dir)
        fprintf(f, "  %s/last.safetensors holds the diverged weights: start a new run (in the same directory: "
                   "add --force) rather than --resume.\n", checkpoint_dir);
}

void watch_explain_stall(const fit_watch *w, const at_epoch_stats *s, bool adversarial, FILE *f) {
    fprintf(f, "warning: no learning for %d epochs: loss %.3f = ln %d and accuracy at chance (%.0f%%): the "
               "model predicts (nearly) one class.\n", w->stalled, (double)s->train_loss, w->classes,
            100.0 / w->classes);
    if (adversarial)
        fprintf(f, "  What usually fixes it: --eps-warmup N (ramp eps up over the first N epochs, e.g. 5), "
                   "a smaller --lr, or a smaller --eps.\n");
    else
        fprintf(f, "  What usually fixes it: another --lr (smaller, or larger if the loss barely moves), "
                   "--optim adam, or --init kaiming.\n");
}
