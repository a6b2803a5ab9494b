/* One slot, one membership: 3 acceptors, 2 proposers that each restart once (two ballots
   each); loss, duplication, reordering, and gossip (unless -DNO_GOSSIP). Invariant: no
   two values chosen. */
#define NA 3
#define MAXR 2
#define MAXMV 0
#include "slot_core.pml"
