/* eps on the 0-1 pixel scale, the one parser of every subcommand (fit --eps, eval, attack and
 * report --eps): a comma list of numbers or fractions like 8/255, each in [0, 1]; a value above 1
 * is almost always meant on the 0-255 scale, so the message says how to write it. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

bool cli_parse_eps(const char *cmd, const char *text, float *eps, int cap, int *count) {
    *count = 0;
    const char *p = text;
    while (p && *p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char item[64];
        if (len == 0 || len >= sizeof item) {
            fprintf(stderr, "advtrain %s: --eps %s: empty or overlong item\n", cmd, text);
            return false;
        }
        memcpy(item, p, len);
        item[len] = '\0';
        char *end;
        errno = 0;
        double v = strtod(item, &end);
        if (end != item && *end == '/') { /* 8/255 */
            char *end2;
            double den = strtod(end + 1, &end2);
            if (end2 == end + 1 || *end2 || !(den > 0)) {
                fprintf(stderr, "advtrain %s: --eps: '%s' is not a number or a fraction like 8/255\n", cmd, item);
                return false;
            }
            v /= den;
            end = end2;
        }
        if (end == item || *end || errno || !isfinite(v) || v < 0) {
            fprintf(stderr, "advtrain %s: --eps: '%s' is not a number >= 0\n", cmd, item);
            return false;
        }
        if (v > 1.0) {
            fprintf(stderr,
                    "advtrain %s: --eps %s: eps is on the 0-1 pixel scale; for %g on the 0-255 "
                    "scale write %g/255 (= %.4f)\n",
                    cmd, item, v, v, v / 255.0);
            return false;
        }
        if (*count >= cap) {
            if (cap == 1)
                fprintf(stderr, "advtrain %s: --eps %s: takes one value here\n", cmd, text);
            else
                fprintf(stderr, "advtrain %s: --eps: at most %d values\n", cmd, cap);
            return false;
        }
        eps[(*count)++] = (float)v;
        p = comma ? comma + 1 : NULL;
    }
    if (*count == 0) {
        fprintf(stderr, "advtrain %s: --eps needs at least one value (0-1 pixel scale, e.g. 0.1 or 8/255)\n", cmd);
        return false;
    }
    return true;
}

