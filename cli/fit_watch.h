/* Explosion and no-learning detection for advtrain fit (cli/fit_watch.c). */
#ifndef ADVTRAIN_FIT_WATCH_H
#define ADVTRAIN_FIT_WATCH_H
#include "cli.h"

typedef struct fit_watch {
    int classes;      /* 0: regression */
    float first_loss; /* NAN until the first epoch */
    int stalled;      /* consecutive epochs at ln K and chance accuracy */
    int stall_after;  /* epochs that make a stall */
    bool warned;
} fit_watch;

typedef enum watch_event { WATCH_OK, WATCH_EXPLODED, WATCH_STALLED } watch_event;

void watch_init(fit_watch *w, int classes, int epochs);
/* WATCH_EXPLODED: stop the run; WATCH_STALLED: warn (once). */
watch_event watch_epoch(fit_watch *w, const at_epoch_stats *s);
void watch_explain_explosion(const fit_watch *w, const at_epoch_stats *s, float lr, const char *checkpoint_dir,
                             FILE *f);
void watch_explain_stall(const fit_watch *w, const at_epoch_stats *s, bool adversarial, FILE *f);
#endif
