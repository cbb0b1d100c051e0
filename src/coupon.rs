//! The coupon state rule (SPEC §4), as plain functions over plain data.
//!
//! Each certificate has one status, decided by the message with the greatest
//! `(msg_time, precedence)`, where `refund_success` > `verify_cancel` > `verify`. Douyin
//! promises neither order nor single delivery, so the rule must give the same final state
//! whatever order the same messages arrive in, and must say which arrivals change
//! anything: only those are printed.

use std::fmt;

/// What a coupon message says happened (`content.action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    // Declared in precedence order: the derived `Ord` is the tie-break of SPEC §4.
    Verify,
    VerifyCancel,
    RefundSuccess,
}

/// A certificate's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Verified,
    Cancelled,
    Refunded,
}

/// How one message relates to the state it meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Changes the status: recorded, and told to the store (printed, displayed).
    Applied,
    /// Newer or as new as the deciding message but leaves the status as it was. It
    /// becomes the deciding message (so an older message cannot later overturn it).
    Duplicate,
    /// Older than the deciding message: recorded only.
    Stale,
}

/// The deciding message's key, as kept beside the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    pub status: Status,
    pub msg_time: i64,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Verify, Action::VerifyCancel, Action::RefundSuccess];

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// Douyin's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Verify => "verify",
            Action::VerifyCancel => "verify_cancel",
            Action::RefundSuccess => "refund_success",
        }
    }

    /// The status this action leaves the certificate in.
    pub fn status(self) -> Status {
        match self {
            Action::Verify => Status::Verified,
            Action::VerifyCancel => Status::Cancelled,
            Action::RefundSuccess => Status::Refunded,
        }
    }

    /// What the store's staff read: 核销成功 / 已撤销核销 / 退款成功.
    pub fn headline_zh(self) -> &'static str {
        match self {
            Action::Verify => "核销成功",
            Action::VerifyCancel => "已撤销核销",
            Action::RefundSuccess => "退款成功",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Verified => "verified",
            Status::Cancelled => "cancelled",
            Status::Refunded => "refunded",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Action::ALL
            .into_iter()
            .map(Action::status)
            .find(|st| st.as_str() == s)
    }

    /// The action that leads to this status (statuses and actions are one to one).
    pub fn action(self) -> Action {
        match self {
            Status::Verified => Action::Verify,
            Status::Cancelled => Action::VerifyCancel,
            Status::Refunded => Action::RefundSuccess,
        }
    }
}

/// Decides what `(action, msg_time)` does to a certificate whose deciding message is
/// `current` (`None` for a certificate never seen). Returns the verdict and the state to
/// keep afterwards.
pub fn decide(current: Option<State>, action: Action, msg_time: i64) -> (Verdict, State) {
    let incoming = State {
        status: action.status(),
        msg_time,
    };
    let Some(current) = current else {
        return (Verdict::Applied, incoming);
    };
    let key = |s: State| (s.msg_time, s.status.action());
    if key(incoming) < key(current) {
        (Verdict::Stale, current)
    } else if incoming.status == current.status {
        (Verdict::Duplicate, incoming)
    } else {
        (Verdict::Applied, incoming)
    }
}

#[cfg(test)]
mod tests {
    use super::Action::*;
    use super::Verdict::*;
    use super::*;

    fn state(action: Action, t: i64) -> Option<State> {
        Some(State {
            status: action.status(),
            msg_time: t,
        })
    }

    #[test]
    fn decide_table() {
        // (current deciding message, incoming, verdict, deciding message afterwards)
        let cases = [
            (None, (Verify, 100), Applied, (Verify, 100)),
            (None, (VerifyCancel, 100), Applied, (VerifyCancel, 100)),
            (None, (RefundSuccess, 100), Applied, (RefundSuccess, 100)),
            // a second verify of a verified coupon
            (state(Verify, 100), (Verify, 100), Duplicate, (Verify, 100)),
            (state(Verify, 100), (Verify, 200), Duplicate, (Verify, 200)),
            (state(Verify, 100), (Verify, 50), Stale, (Verify, 100)),
            // cancel after verify, and a late verify after the cancel
            (
                state(Verify, 100),
                (VerifyCancel, 150),
                Applied,
                (VerifyCancel, 150),
            ),
            (
                state(VerifyCancel, 150),
                (Verify, 100),
                Stale,
                (VerifyCancel, 150),
            ),
            // a cancel that overtakes its verify, both in the same second
            (
                state(VerifyCancel, 100),
                (Verify, 100),
                Stale,
                (VerifyCancel, 100),
            ),
            (
                state(Verify, 100),
                (VerifyCancel, 100),
                Applied,
                (VerifyCancel, 100),
            ),
            // a genuine re-verify after a cancel
            (
                state(VerifyCancel, 150),
                (Verify, 200),
                Applied,
                (Verify, 200),
            ),
            // refund outranks everything in the same second, and is final unless newer
            (
                state(VerifyCancel, 100),
                (RefundSuccess, 100),
                Applied,
                (RefundSuccess, 100),
            ),
            (
                state(RefundSuccess, 100),
                (VerifyCancel, 100),
                Stale,
                (RefundSuccess, 100),
            ),
            (
                state(RefundSuccess, 100),
                (Verify, 99),
                Stale,
                (RefundSuccess, 100),
            ),
            (
                state(RefundSuccess, 100),
                (RefundSuccess, 100),
                Duplicate,
                (RefundSuccess, 100),
            ),
            (
                state(RefundSuccess, 100),
                (Verify, 101),
                Applied,
                (Verify, 101),
            ),
        ];
        for (current, (action, t), verdict, (after_action, after_t)) in cases {
            let (got, after) = decide(current, action, t);
            assert_eq!(got, verdict, "{current:?} + {action}@{t}");
            assert_eq!(
                after,
                state(after_action, after_t).unwrap(),
                "{current:?} + {action}@{t}"
            );
        }
    }

    /// Every arrival order of the same messages ends in the same state, and exactly the
    /// arrivals that change the status are `Applied`.
    #[test]
    fn final_state_does_not_depend_on_arrival_order() {
        let msgs = [
            (Verify, 100),
            (VerifyCancel, 100),
            (Verify, 90),
            (RefundSuccess, 120),
            (Verify, 130),
        ];
        let mut order: Vec<usize> = (0..msgs.len()).collect();
        let mut finals = Vec::new();
        permute(&mut order, 0, &mut |perm| {
            let mut cur = None;
            for &i in perm {
                let (action, t) = msgs[i];
                let before = cur.map(|s: State| s.status);
                let (verdict, after) = decide(cur, action, t);
                assert_eq!(verdict == Applied, before != Some(after.status));
                cur = Some(after);
            }
            finals.push(cur.unwrap());
        });
        assert_eq!(finals.len(), 120);
        assert!(finals.iter().all(|s| *s == state(Verify, 130).unwrap()));
    }

    fn permute(v: &mut Vec<usize>, k: usize, f: &mut dyn FnMut(&[usize])) {
        if k == v.len() {
            return f(v);
        }
        for i in k..v.len() {
            v.swap(k, i);
            permute(v, k + 1, f);
            v.swap(k, i);
        }
    }

    #[test]
    fn words_round_trip() {
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(a));
            assert_eq!(Status::parse(a.status().as_str()), Some(a.status()));
            assert_eq!(a.status().action(), a);
        }
        assert_eq!(Action::parse("VERIFY"), None);
    }
}
