/* membership.pml with each proposer free to start its ballot under any membership decided
   by then, v1 included (tests: --long). */
#define NA 4
#define MAXR 1
#define MAXMV 2
#include "slot_core.pml"
