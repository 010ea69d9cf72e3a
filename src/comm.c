/* Helpers of the communicator interface (at_comm, include/advtrain.h): the one rule by which
 * attacks, verification and data-parallel training split work among the ranks. */
#include "advtrain.h"

void at_comm_share(const at_comm *comm, int n, int *lo, int *hi) {
    if (!comm || comm->size <= 1) {
        *lo = 0;
        *hi = n;
        return;
    }
    *lo = (int)((int64_t)n * comm->rank / comm->size);
    *hi = (int)((int64_t)n * (comm->rank + 1) / comm->size);
}
