/* The built-in models by name. A model that takes an argument is written "name:ARG"
 * ("preact-resnet18:16"). */
#include "models.h"

#include <string.h>

static const struct {
    const char *name;
    at_model_fn build;
    bool takes_arg;
} models[] = {
    {"seed-mlp", at_model_seed_mlp, false},
    {"seed-cnn", at_model_seed_cnn, false},
    {"mlp", at_model_mlp, false},
    {"smallcnn", at_model_smallcnn, false},
    {"resnet8", at_model_resnet8, false},
    {"preact-resnet18", at_model_preact_resnet18, true},
    {"dscnn", at_model_dscnn, false},
};

/* The entry `spec` names, and its argument (NULL if none); -1 if none. */
static int find(const char *spec, const char **arg) {
    const size_t len = strcspn(spec, ":");
    *arg = spec[len] == ':' ? spec + len + 1 : NULL;
    for (int i = 0; i < (int)(sizeof models / sizeof *models); i++)
        if (strlen(models[i].name) == len && strncmp(spec, models[i].name, len) == 0 &&
            (models[i].takes_arg || !*arg))
            return i;
    return -1;
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
