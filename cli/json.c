/* JSON output with the shortest numbers: cJSON prints a float widened to double with 17
 * digits (0.645f as 0.64499998092651367). Each number is written with the fewest digits that
 * read back as the same float; whole numbers exactly. */
#include "cli.h"

#include <cjson/cJSON.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void shortest(double v, char *buf, size_t cap) {
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(buf, cap, "%.0f", v);
        return;
    }
    /* Every measurement is a float at heart (or a double sum of floats, e.g. seconds, L1 norms,
     * whose digits past float precision mean nothing): fewest digits strtof maps back to it.
     * Outside float's range the double's own shortest form. */
    if (fabs(v) <= FLT_MAX && fabs(v) >= 1e-30) {
        const float f = (float)v; /* the float's digits, not the double's: those may round apart */
        for (int digits = 1; digits <= 9; digits++) {
            snprintf(buf, cap, "%.*g", digits, (double)f);
            if (strtof(buf, NULL) == f) return;
        }
        return;
    }
    for (int digits = 15; digits <= 17; digits++) {
        snprintf(buf, cap, "%.*g", digits, v);
        if (strtod(buf, NULL) == v) return;
    }
}

/* Replaces every finite number in o by a raw item holding its shortest text. */
static void shorten(cJSON *o) {
    for (cJSON *c = o ? o->child : NULL; c; c = c->next) {
        if (cJSON_IsObject(c) || cJSON_IsArray(c)) {
            shorten(c);
            continue;
        }
        if (!cJSON_IsNumber(c) || !isfinite(c->valuedouble)) continue; /* cJSON writes null */
        char text[40];
        shortest(c->valuedouble, text, sizeof text);
        /* In place, keeping the key: cJSON_Delete frees valuestring (default malloc hooks). */
        size_t n = strlen(text) + 1;
        char *copy = malloc(n);
        if (!copy) continue; /* keep cJSON's own form */
        memcpy(copy, text, n);
        c->type = cJSON_Raw;
        c->valuestring = copy;
    }
}

char *cli_json_text(cJSON *o) {
    shorten(o);
    return cJSON_PrintUnformatted(o);
}
