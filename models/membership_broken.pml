/* Broken on purpose: acceptors ignore membership versions (no stale refusal, no freeze
   while a change is pending). Spin must find two different chosen values. */
#define BROKEN_MEMBERSHIP 1
#include "membership.pml"
