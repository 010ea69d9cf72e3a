/* Helpers for the layers' spec hooks (parse, spec_word): the argument checks every keyword
 * shares, so that each layer file says only what its arguments mean. */
#include "layer.h"

#include <string.h>

at_status at_spec_whole(const double *args, int count, const char *token) {
    /* The range first: converting a double outside int's range (or NaN) to int is undefined. */
    for (int a = 0; a < count; a++)
        if (!(args[a] >= 0 && args[a] < 1e6 && args[a] == (double)(int)args[a]))
            return at_fail(AT_ERR_ARG, "spec layer '%s': argument %d must be a whole number", token,
                           a + 1);
    return AT_OK;
}

at_status at_spec_no_keys(int nkeys, const char *const *keys, const char *token) {
    if (nkeys > 0)
        return at_fail(AT_ERR_ARG, "spec layer '%s': unknown option '%s'", token, keys[0]);
    return AT_OK;
}
