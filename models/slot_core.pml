/*
 * Synod agreement: one slot of Paxos-per-slot with one-at-a-time membership changes.
 *
 * In step with controller/agreement (same message names: prepare, promise, accept, accepted).
 * Included by slot.pml (3 acceptors, 2 proposers, 2 ballots each, one membership) and
 * membership.pml (4 acceptors, two one-at-a-time changes); tests/agreement/test_model.py
 * checks both exhaustively with Spin, and the broken variants, in seconds.
 *
 * What it models
 *  - 4 acceptors, 2 proposers, 2 values; ballots (mv, round, proposer) ordered by mv first.
 *  - Memberships: v0 = {0,1,2}, v1 = {0,1,2,3} (3 joins), v2 = {1,2,3} (0 leaves).
 *    A majority of v0 and a majority of v2 need not intersect: the rules must carry
 *    decisions across two changes.
 *  - The network is a set of sent messages that any acceptor or proposer may read at any
 *    time, any number of times, or never: loss, duplication and reordering in one.
 *  - Proposer restarts: a proposer may abandon its ballot at any moment and start the next
 *    one (possibly under an older membership it still believes in: a lagging proposer).
 *  - Acceptor rules of the code: refuse a ballot under another membership version than its
 *    own (stale or ahead), refuse once frozen (it accepted membership/mv+1), promise only a
 *    higher ballot, accept only at or above its promise; a promise reports the highest
 *    accepted vote below the ballot that the acceptor holds, from any author.
 *  - Knowledge through the DAG: an acceptor that learns membership k+1 holds the causal
 *    past of its certificate: the votes each certifying acceptor held when it froze.
 *    Acceptors may also hear of any accepted vote (gossip).
 *
 * What it abstracts
 *  - The membership slot's own Paxos: membership k+1 is decided once a majority of the
 *    voters of k froze at k (accepted some value for membership/k+1); the certificate is
 *    that majority. Signatures, ops, parents and sync are the DAG's job, assumed correct.
 *  - Refusal messages (a refusal only speeds proposers up; ignoring is the same for safety).
 *
 * How the state space is bounded: NA acceptors, NP proposers with MAXR ballots each, MAXMV
 * membership changes, 2 values, the network as a set (bitmasks), every action one atomic
 * step whose locals are reset, so a no-op returns to a state already seen.
 *
 * Invariant (asserted whenever a ballot reaches a quorum): no two different values are
 * chosen for the slot.
 */

#ifndef NA
#define NA 4
#endif
#ifndef NP
#define NP 2
#endif
#ifndef MAXR
#define MAXR 2
#endif
#ifndef MAXR1
#define MAXR1 MAXR  /* ballots of proposer 1 (proposer 0 has MAXR) */
#endif
#ifndef MAXMV
#define MAXMV 2
#endif
#define NB ((MAXMV + 1) * MAXR * NP)
#define BAL(m, r, p) ((m) * MAXR * NP + (r) * NP + (p) + 1)
#define MVOF(b) (((b) - 1) / (MAXR * NP))
#define VOTERS(m) ((m) == 0 -> 7 : ((m) == 1 -> 15 : 14))
#define QUORUM(m) ((m) == 1 -> 3 : 2)
#define VOTER(m, a) (((VOTERS(m)) >> (a)) & 1)
#define BIT(x, i) (((x) >> (i)) & 1)
#define COUNT4(x) (BIT(x, 0) + BIT(x, 1) + BIT(x, 2) + BIT(x, 3))

int prepared;              /* prepare(b) sent: bit b */
byte prom[(NB + 1) * NA];  /* promise(b) by a: 0 none, else 1 + highest held vote below b */
byte accv[NB + 1];         /* accept(b, v) sent: v, 0 none */
byte accd[NB + 1];         /* accepted(b) by: bitmask of acceptors */

byte promised[NA];         /* acceptor state (from its own ops in the code) */
byte mv[NA];               /* the membership version the acceptor knows */
byte frozen[NA];           /* bit k: accepted membership/k+1 while at k */
int held[NA];              /* ballots whose accepted vote the acceptor holds */
int snap[NA * (MAXMV + 1)];      /* held when it froze at k */

byte decided_mv;           /* newest decided membership */
int cert[MAXMV + 1];       /* votes in the causal past of membership k's certificate */

byte pr[NP];               /* next round of each proposer */
byte pb[NP];               /* its current ballot (0: none) */
byte pphase[NP];           /* 1: preparing, 2: accept sent */

byte chosen;               /* the value chosen so far (0: none) */

active proctype world()
{
    byte a, p, b, m, k, hb, v, n;
    bool ok;
    /* Each action is one atomic step: choose its parameters, then act if its guard holds
       (else it is a no-op, which returns to a state already seen). */
    do
    :: atomic {  /* proposer p starts a ballot under a membership it knows (a restart) */
        select(p : 0 .. NP - 1);
#ifdef SPLIT_MV
        m = (p == 0 -> 0 : MAXMV);  /* proposer 0 lags at v0, proposer 1 is at the newest */
#else
        select(m : 0 .. MAXMV);
#endif
        if
        :: pr[p] < (p == 0 -> MAXR : MAXR1) && m <= decided_mv ->
            pb[p] = BAL(m, pr[p], p);
            pr[p]++;
            pphase[p] = 1;
            prepared = prepared | (1 << pb[p])
        :: else -> skip
        fi;
        m = 0; p = 0
       }
    :: atomic {  /* proposer p: a quorum of promises -> accept(b, v) */
        select(p : 0 .. NP - 1);
        b = pb[p];
        n = 0; hb = 0; a = 0;
        do
        :: a < NA ->
            if
            :: b > 0 && VOTER(MVOF(b), a) && prom[b * NA + a] > 0 ->
                n++;
                if
                :: prom[b * NA + a] - 1 > hb -> hb = prom[b * NA + a] - 1
                :: else -> skip
                fi
            :: else -> skip
            fi;
            a++
        :: else -> break
        od;
        if
        :: pphase[p] == 1 && n >= QUORUM(MVOF(b)) ->
            if
            :: hb > 0 -> v = accv[hb]
            :: else -> v = p + 1
            fi;
            accv[b] = v;
            pphase[p] = 2
        :: else -> skip
        fi;
        a = 0; b = 0; n = 0; hb = 0; v = 0; p = 0
       }
    :: atomic {  /* acceptor a receives prepare(b) */
        select(a : 0 .. NA - 1);
        select(b : 1 .. NB);
        ok = BIT(prepared, b) && VOTER(mv[a], a) && b > promised[a];
#ifndef BROKEN_MEMBERSHIP
        ok = ok && MVOF(b) == mv[a] && !BIT(frozen[a], mv[a]);
#endif
        if
        :: ok ->
            promised[a] = b;
            hb = b - 1;
            do
            :: hb > 0 && !BIT(held[a], hb) -> hb--
            :: else -> break
            od;
            prom[b * NA + a] = 1 + hb
        :: else -> skip
        fi;
        a = 0; b = 0; hb = 0; ok = false
       }
    :: atomic {  /* acceptor a receives accept(b, v) */
        select(a : 0 .. NA - 1);
        select(b : 1 .. NB);
        ok = accv[b] > 0 && VOTER(mv[a], a) && !BIT(accd[b], a);
#ifndef BROKEN_MEMBERSHIP
        ok = ok && MVOF(b) == mv[a] && !BIT(frozen[a], mv[a]);
#endif
#ifndef BROKEN_PROMISE
        ok = ok && b >= promised[a];
#endif
        if
        :: ok ->
            if
            :: b > promised[a] -> promised[a] = b
            :: else -> skip
            fi;
            accd[b] = accd[b] | (1 << a);
            held[a] = held[a] | (1 << b);
            if
            :: COUNT4(accd[b] & VOTERS(MVOF(b))) >= QUORUM(MVOF(b)) ->
                if
                :: chosen == 0 -> chosen = accv[b]
                :: else -> assert(chosen == accv[b])  /* the invariant */
                fi
            :: else -> skip
            fi
        :: else -> skip
        fi;
        a = 0; b = 0; ok = false
       }
    :: atomic {  /* acceptor a accepts a value for membership/mv+1: frozen at mv */
        select(a : 0 .. NA - 1);
        m = mv[a];
        if
        :: m < MAXMV && VOTER(m, a) && !BIT(frozen[a], m) ->
            frozen[a] = frozen[a] | (1 << m);
            snap[a * MAXMV + m] = held[a];
            n = 0; k = 0;
            do
            :: k < NA -> n = n + (VOTER(m, k) & BIT(frozen[k], m)); k++
            :: else -> break
            od;
            if
            :: decided_mv == m && n >= QUORUM(m) ->  /* decided; its certificate: them */
                decided_mv = m + 1;
                k = 0;
                do
                :: k < NA ->
                    if
                    :: VOTER(m, k) && BIT(frozen[k], m) ->
                        cert[m + 1] = cert[m + 1] | snap[k * MAXMV + m]
                    :: else -> skip
                    fi;
                    k++
                :: else -> break
                od
            :: else -> skip
            fi
        :: else -> skip
        fi;
        a = 0; m = 0; n = 0; k = 0
       }
    :: atomic {  /* acceptor a learns the next decided membership, with its causal past */
        select(a : 0 .. NA - 1);
        if
        :: mv[a] < decided_mv ->
            mv[a]++;
            held[a] = held[a] | cert[mv[a]]
        :: else -> skip
        fi;
        a = 0
       }
#ifndef NO_GOSSIP
    :: atomic {  /* acceptor a hears of an accepted vote (from any author) */
        select(a : 0 .. NA - 1);
        select(b : 1 .. NB);
        if
        :: accd[b] != 0 -> held[a] = held[a] | (1 << b)
        :: else -> skip
        fi;
        a = 0; b = 0
       }
#endif
    od
}
