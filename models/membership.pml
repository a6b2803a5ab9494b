/* Two one-at-a-time membership changes (v0 {0,1,2} -> v1 {0,1,2,3} -> v2 {1,2,3}), where a
   majority of v0 and one of v2 need not intersect; 2 proposers, one ballot each: one
   lagging under v0, one under v2; gossip unless -DNO_GOSSIP. Invariant: no two values
   chosen. Larger: membership_long.pml. */
#define NA 4
#define MAXR 1
#define MAXMV 2
#define SPLIT_MV 1
#include "slot_core.pml"
