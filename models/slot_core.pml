/*
 * Synod agreement: one slot of Paxos-per-slot with one-at-a-time membership changes.
 *
 * In step with controller/agreement (same message names: prepare, promise, accept, accepted).
 * Included by slot.pml (one membership), membership.pml (two one-at-a-time changes),
 * membership_long.pml and the broken variants (*_broken*.pml), which
 * tests/agreement/test_model.py checks with Spin. docs/agreement.md ("The model") says
 * what each covers and what it leaves out, with state counts.
 *
 * What it models
 *  - NA acceptors, 2 proposers, 2 values (proposer p proposes p + 1); ballots
 *    (mv, round, proposer) ordered by mv first.
 *  - Memberships: v0 = {0,1,2}, v1 = {0,1,2,3} (3 joins), v2 = {1,2,3} (0 leaves).
 *    A majority of v0 and a majority of v2 need not intersect: the rules must carry
 *    decisions across two changes.
 *  - The network is a set of sent messages that any acceptor or proposer may read at any
 *    time, any number of times, or never: loss, duplication and reordering in one.
 *  - Proposer restarts: a proposer may abandon its ballot at any moment and start the next
 *    one (possibly under an older membership it still believes in: a lagging proposer).
 *    An acceptor's crash is the same as its silence: its state is its own durable votes.
 *  - Acceptor rules of the code (engine.py, _react): refuse a ballot under another
 *    membership version than its own (stale or ahead), refuse once frozen (it accepted
 *    membership/mv+1), promise only a higher ballot, accept only at or above its promise.
 *  - Promises report the highest accepted vote below the ballot that the acceptor holds,
 *    from any author (ledger.py, SlotRecord.highest_vote_below). It holds its own votes;
 *    on learning membership k+1 through a certificate — any majority of the voters of k
 *    that froze at k — it holds the certificate's causal past: the votes each of those
 *    voters held when it froze.
 *  - Gossip (unless NO_GOSSIP): it also holds whatever votes of other authors were relayed
 *    into its DAG, by anyone, at any time. The highest vote below b among "own and
 *    certified, plus any relayed" is the own-and-certified one or a relayed one above it,
 *    so a promise reports either, for any accepted vote below b that exists by then (the
 *    parameter g of PROMISE). Every run of the code is a run here; the model also lets an
 *    acceptor leave out at its next promise a vote it reported before, and ignores that a
 *    relayed op brings its causal past: both only add runs.
 *
 * What it abstracts
 *  - The membership slot's own Paxos: membership k+1 is decided once a majority of the
 *    voters of k froze at k (accepted some value for membership/k+1). Signatures, ops,
 *    parents and sync are the DAG's job, assumed correct; no Byzantine acceptor.
 *  - Learners: a node decides when it holds accepted votes of a majority in one ballot
 *    (ledger.py, _quorum), whoever relayed them; those votes exist, so it can only decide
 *    a value the global check below sees chosen.
 *  - A proposer uses every promise for its ballot present when it sends accept (as the
 *    engine does); only their count and the highest vote they report matter, so that is
 *    what is kept per ballot.
 *  - Refusal messages (a refusal only speeds proposers up; ignoring is the same for safety).
 *
 * How the state space is bounded: NA acceptors, 2 proposers with MAXR ballots each, MAXMV
 * membership changes, 2 values, the network as a set (bitmasks).
 * Each action is written once as a macro and instantiated for every value of its
 * parameters (the EACH_* lists), guard first: a disabled action is no transition at all,
 * and an enabled one is one d_step whose scratch variables are reset at its end.
 *
 * Invariant (asserted whenever a ballot reaches a quorum): no two different values are
 * chosen for the slot.
 */

#ifndef NA
#define NA 4
#endif
#ifndef MAXR
#define MAXR 1
#endif
#ifndef MAXMV
#define MAXMV 2
#endif
#define NP 2
#define NB ((MAXMV + 1) * MAXR * NP)
#define BAL(m, r, p) ((m) * MAXR * NP + (r) * NP + (p) + 1)
#define MVOF(b) (((b) - 1) / (MAXR * NP))
#define VOTERS(m) ((m) == 0 -> 7 : ((m) == 1 -> 15 : 14))
#define QUORUM(m) ((m) == 1 -> 3 : 2)
#define VOTER(m, a) (((VOTERS(m)) >> (a)) & 1)
#define BIT(x, i) (((x) >> (i)) & 1)
#define COUNT4(x) (BIT(x, 0) + BIT(x, 1) + BIT(x, 2) + BIT(x, 3))

#if !((NA == 3 && MAXMV == 0) || (NA == 4 && MAXMV == 2))
#error "configurations: 3 acceptors and one membership, or 4 acceptors and two changes"
#endif

byte prepared;             /* prepare(b) sent: bit b */
byte promd[NB + 1];        /* promise(b) by: bitmask of voters of b's membership */
byte reported[NB + 1];     /* the highest vote those promises report (0: none) */
byte accv[NB + 1];         /* accept(b, v) sent: v, 0 none */
byte accd[NB + 1];         /* accepted(b) by: bitmask of acceptors */

byte promised[NA];         /* acceptor state (from its own ops in the code) */
byte mv[NA];               /* the membership version the acceptor knows */
byte frozen[NA];           /* bit k: accepted membership/k+1 while at k */
byte held[NA];             /* ballots of the votes it holds: its own and certified ones */
byte seen[NA * (MAXMV + 1)];  /* seen[a * (MAXMV + 1) + k]: held[a] when a froze at k */

byte decided_mv;           /* newest decided membership */

byte pr[NP];               /* next round of each proposer */
byte pb[NP];               /* its current ballot (0: none) */
byte pphase[NP];           /* 1: preparing, 2: accept sent */

byte chosen;               /* the value chosen so far (0: none) */

byte hb, n, k;             /* scratch of one step, reset at its end */

/* Instantiation lists: proposers with the memberships they may start under, acceptors,
   (acceptor, ballot), (acceptor, ballot, relayed vote) and (acceptor, certificate). */
#ifdef SPLIT_MV  /* proposer 0 lags at v0, proposer 1 is at the newest */
#define EACH_PM(X) X(0, 0) X(1, MAXMV)
#elif MAXMV == 0
#define EACH_PM(X) X(0, 0) X(1, 0)
#else
#define EACH_PM(X) X(0, 0) X(0, 1) X(0, 2) X(1, 0) X(1, 1) X(1, 2)
#endif
#define EACH_P(X) X(0) X(1)
#if NA == 3
#define EACH_A(X) X(0) X(1) X(2)
#define EACH_AB(X) EACH_B(X, 0) EACH_B(X, 1) EACH_B(X, 2)
#else
#define EACH_A(X) X(0) X(1) X(2) X(3)
#define EACH_AB(X) EACH_B(X, 0) EACH_B(X, 1) EACH_B(X, 2) EACH_B(X, 3)
/* Certificates: sets of at least two of the 4 acceptors (the guard keeps majorities of
   voters that froze). */
#define EACH_AS(X) EACH_S(X, 0) EACH_S(X, 1) EACH_S(X, 2) EACH_S(X, 3)
#define EACH_S(X, a) X(a, 3) X(a, 5) X(a, 6) X(a, 7) X(a, 9) X(a, 10) X(a, 11) X(a, 12) \
                     X(a, 13) X(a, 14) X(a, 15)
#endif
/* Ballots 1 .. NB are bits of a byte (prepared, held, seen). */
#if NB == 4
#define EACH_B(X, a) X(a, 1) X(a, 2) X(a, 3) X(a, 4)
#define EACH_G(X, a, b) X(a, b, 1) X(a, b, 2) X(a, b, 3)
#elif NB == 6
#define EACH_B(X, a) X(a, 1) X(a, 2) X(a, 3) X(a, 4) X(a, 5) X(a, 6)
#define EACH_G(X, a, b) X(a, b, 1) X(a, b, 2) X(a, b, 3) X(a, b, 4) X(a, b, 5)
#else
#error "ballot lists are written for 4 or 6 ballots"
#endif

/* Rules that the broken variants drop: membership versions and freezing
   (BROKEN_MEMBERSHIP), accepting only at or above the promise (BROKEN_PROMISE). */
#ifdef BROKEN_MEMBERSHIP
#define MV_OK(a, b) 1
#else
#define MV_OK(a, b) (MVOF(b) == mv[a] && !BIT(frozen[a], mv[a]))
#endif
#ifdef BROKEN_PROMISE
#define PROMISE_OK(a, b) 1
#else
#define PROMISE_OK(a, b) ((b) >= promised[a])
#endif

/* Proposer p starts a ballot under a membership m it knows (a restart, at any moment). */
#define START(p, m) \
    :: d_step { pr[p] < MAXR && m <= decided_mv -> \
        pb[p] = BAL(m, pr[p], p); \
        pr[p]++; \
        pphase[p] = 1; \
        prepared = prepared | (1 << pb[p]) \
       }

/* Proposer p: promises from a quorum -> accept(b, v), v of the highest reported vote,
   else its own. */
#define PROPOSE(p) \
    :: d_step { pphase[p] == 1 && COUNT4(promd[pb[p]]) >= QUORUM(MVOF(pb[p])) -> \
        accv[pb[p]] = (reported[pb[p]] > 0 -> accv[reported[pb[p]]] : p + 1); \
        pphase[p] = 2 \
       }

/* Acceptor a receives prepare(b) and promises, reporting the highest vote below b among
   those it holds, or g > 0, an accepted vote below b relayed to it. */
#define PROMISE(a, b, g) \
    :: d_step { BIT(prepared, b) && VOTER(mv[a], a) && b > promised[a] && MV_OK(a, b) && \
                (g == 0 || (g < b && accd[g] != 0)) -> \
        promised[a] = b; \
        hb = b - 1; \
        do \
        :: hb > 0 && !BIT(held[a], hb) -> hb-- \
        :: else -> break \
        od; \
        RELAYED(g); \
        if \
        :: VOTER(MVOF(b), a) -> \
            promd[b] = promd[b] | (1 << a); \
            if \
            :: hb > reported[b] -> reported[b] = hb \
            :: else -> skip \
            fi \
        :: else -> skip  /* only with BROKEN_MEMBERSHIP: a promise the proposer ignores */ \
        fi; \
        hb = 0 \
       }
#ifdef BROKEN_RELAYED
/* Broken on purpose: the vote learned last — a relayed one — is reported, not the highest
   (right as long as an acceptor holds only its own votes: they rise with its promise). */
#define RELAYED(g) \
    if \
    :: g > 0 -> hb = g \
    :: else -> skip \
    fi
#else
#define RELAYED(g) \
    if \
    :: g > hb -> hb = g \
    :: else -> skip \
    fi
#endif
#ifdef NO_GOSSIP
#define PROMISE_G(a, b) PROMISE(a, b, 0)
#else
#define PROMISE_G(a, b) PROMISE(a, b, 0) EACH_G(PROMISE, a, b)
#endif

/* Acceptor a receives accept(b, v); the invariant, once b has a quorum. */
#define ACCEPT(a, b) \
    :: d_step { accv[b] > 0 && VOTER(mv[a], a) && !BIT(accd[b], a) && MV_OK(a, b) && \
                PROMISE_OK(a, b) -> \
        if \
        :: b > promised[a] -> promised[a] = b \
        :: else -> skip \
        fi; \
        accd[b] = accd[b] | (1 << a); \
        held[a] = held[a] | (1 << b); \
        if \
        :: COUNT4(accd[b] & VOTERS(MVOF(b))) >= QUORUM(MVOF(b)) -> \
            if \
            :: chosen == 0 -> chosen = accv[b] \
            :: else -> assert(chosen == accv[b])  /* no two values chosen */ \
            fi \
        :: else -> skip \
        fi \
       }

/* Acceptor a accepts a value for membership/mv+1: it is frozen at mv. Once a majority of
   the voters of mv froze, membership mv+1 is decided. */
#define FREEZE(a) \
    :: d_step { mv[a] < MAXMV && VOTER(mv[a], a) && !BIT(frozen[a], mv[a]) -> \
        frozen[a] = frozen[a] | (1 << mv[a]); \
        seen[a * (MAXMV + 1) + mv[a]] = held[a]; \
        n = 0; k = 0; \
        do \
        :: k < NA -> n = n + (VOTER(mv[a], k) & BIT(frozen[k], mv[a])); k++ \
        :: else -> break \
        od; \
        if \
        :: decided_mv == mv[a] && n >= QUORUM(mv[a]) -> decided_mv = mv[a] + 1 \
        :: else -> skip \
        fi; \
        n = 0; k = 0 \
       }

#ifdef BROKEN_CAUSAL_PAST
/* Broken on purpose: learning a membership brings the certificate alone, not the votes in
   its causal past (promises then report only the acceptor's own votes). */
#define CERTIFIED(a, k) skip
#else
#define CERTIFIED(a, k) held[a] = held[a] | seen[k * (MAXMV + 1) + mv[a]]
#endif
/* Acceptor a learns the next membership through certificate s — a majority of the voters
   of mv[a], all frozen at mv[a] — and holds its causal past. */
#define FROZEN_IF(s, a, m) (!BIT(s, a) || BIT(frozen[a], m))
#define LEARN(a, s) \
    :: d_step { mv[a] < decided_mv && (s & VOTERS(mv[a])) == s && \
                COUNT4(s) >= QUORUM(mv[a]) && FROZEN_IF(s, 0, mv[a]) && \
                FROZEN_IF(s, 1, mv[a]) && FROZEN_IF(s, 2, mv[a]) && FROZEN_IF(s, 3, mv[a]) -> \
        k = 0; \
        do \
        :: k < NA -> \
            if \
            :: BIT(s, k) -> CERTIFIED(a, k) \
            :: else -> skip \
            fi; \
            k++ \
        :: else -> break \
        od; \
        mv[a]++; \
        k = 0 \
       }

active proctype world()
{
end:  /* every state is a valid end state: once nothing is enabled, the run is over */
    do
    EACH_PM(START)
    EACH_P(PROPOSE)
    EACH_AB(PROMISE_G)
    EACH_AB(ACCEPT)
#if MAXMV > 0
    EACH_A(FREEZE)
    EACH_AS(LEARN)
#endif
    od
}
