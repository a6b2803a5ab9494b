/* Broken on purpose: a promise reports the vote its acceptor learned last — a relayed one —
   instead of the highest it holds. Harmless without gossip (an acceptor's own votes rise
   with its promise); with gossip Spin must find two different chosen values. */
#define BROKEN_RELAYED 1
#include "slot.pml"
