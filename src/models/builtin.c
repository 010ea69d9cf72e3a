/* The built-in models by name. A model that takes an argument is written "name:ARG"
 * ("preact-resnet18:16"). */
#include "models.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    at_model_fn build;
    const char *arg; /* what follows "name:", NULL if nothing */
} models[] = {
    {"seed-mlp", at_model_seed_mlp, NULL},
    {"seed-cnn", at_model_seed_cnn, NULL},
    {"mlp", at_model_mlp, NULL},
    {"smallcnn", at_model_smallcnn, NULL},
    {"resnet8", at_model_resnet8, NULL},
    {"preact-resnet18", at_model_preact_resnet18, "WIDTH"},
    {"dscnn", at_model_dscnn, NULL},
};

/* The entry `spec` names, and its argument (NULL if none); -1 if none. */
static int find(const char *spec, const char **arg) {
    const size_t len = strcspn(spec, ":");
    *arg = spec[len] == ':' ? spec + len + 1 : NULL;
    for (int i = 0; i < (int)(sizeof models / sizeof *models); i++)
        if (strlen(models[i].name) == len && strncmp(spec, models[i].name, len) == 0 &&
            (models[i].arg || !*arg))
            return i;
    return -1;
}

void at_builtin_names(char *buf, size_t cap) {
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof models / sizeof *models && used < cap; i++) {
        int w = snprintf(buf + used, cap - used, "%s%s%s%s%s", used ? ", " : "", models[i].name,
                         models[i].arg ? "[:" : "", models[i].arg ? models[i].arg : "",
                         models[i].arg ? "]" : "");
        if (w > 0) used += (size_t)w;
    }
}

bool at_is_builtin_model(const char *name) {
    const char *arg;
    return find(name, &arg) >= 0;
}

at_status at_builtin_layers(const char *spec, int c, int h, int w, at_layer_desc *L, int cap, int *n) {
    const char *arg;
    const int i = find(spec, &arg);
    if (i < 0) return at_fail(AT_ERR_ARG, "'%s' is not a built-in model", spec);
    at_builder b = {L, 0, cap, false};
    at_status s = models[i].build(&b, arg, c, h, w);
    if (s == AT_OK && b.full)
        return at_fail(AT_ERR_ARG, "%s has more than %d layers", models[i].name, cap);
    *n = b.n;
    return s;
}
