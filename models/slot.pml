/* One slot, one membership: 3 acceptors, 2 proposers, one of which restarts
   with a second ballot,,
   loss, duplication and reordering. Invariant: no two values chosen. */
#define NA 3
#define NP 2
#define MAXR 2
#define MAXR1 1
#define NO_GOSSIP 1
#define MAXMV 0
#include "slot_core.pml"
