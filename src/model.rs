//! The words every part of coupond shares: how a message came ([`Source`]), what
//! arrived ([`Arrival`]), what the store did with it ([`Ack`]), which outputs it gets
//! ([`OutputPlan`], [`SinkKind`]), and an output job with what it is about ([`Job`]).
//!
//! Plain data, no SQL and no I/O: sources build these, the store reads and writes them
//! (through `ToSql`/`FromSql` in `store::schema`), sinks consume them. Nothing here
//! imports a source, a sink or the store.

use crate::coupon::Action;
use crate::intake::{Intake, Outcome};
use crate::schedule::Date;

/// Which sinks get a job for a new message: the one output plan. `serve` (through
/// `sinks::Outputs::plan`), the reverify pass on start and SIGHUP and `coupond reverify`
/// all build it with [`OutputPlan::new`] from the same settings, and the store asks
/// [`OutputPlan::jobs_for`] inside the ingest transaction, so they cannot disagree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputPlan {
    /// The store's own sinks (printer, display, exec, or log), for `actions` only.
    sinks: Vec<SinkKind>,
    actions: Vec<Action>,
    /// `--mqtt`, and whether `--mqtt-forward` is on.
    mqtt: Option<bool>,
    /// `--details on`: an applied message's coupon gets its details (SPEC §13), from a
    /// recovered record that carries them or by a lookup queued with the message.
    details: bool,
    /// `--speaker` (or `--speaker-cmd`): the actions it says (`--speak-actions`).
    speaker: Option<Vec<Action>>,
}

impl OutputPlan {
    /// `sinks`: the store's own sinks ([`SinkKind::configured`]); `actions`:
    /// `--print-actions`; `mqtt`: `Some(forward)` with `--mqtt`.
    pub fn new(sinks: Vec<SinkKind>, actions: Vec<Action>, mqtt: Option<bool>) -> OutputPlan {
        OutputPlan {
            sinks,
            actions,
            mqtt,
            details: false,
            speaker: None,
        }
    }

    /// The plan with the speaker on, saying `actions` (`--print-actions` does not gate
    /// it).
    pub fn speaking(mut self, actions: Vec<Action>) -> OutputPlan {
        self.speaker = Some(actions);
        self
    }

    /// The same plan with the details lookup on or off (`--details`).
    pub fn with_details(self, details: bool) -> OutputPlan {
        OutputPlan { details, ..self }
    }

    /// Whether applied coupon messages get their details (SPEC §13).
    pub fn details(&self) -> bool {
        self.details
    }

    /// Every sink a job may go to, in [`SinkKind`] order.
    pub fn kinds(&self) -> Vec<SinkKind> {
        let mut kinds = self.sinks.clone();
        kinds.extend(self.mqtt.map(|_| SinkKind::Mqtt));
        kinds.extend(self.speaker.as_ref().map(|_| SinkKind::Speaker));
        kinds
    }

    /// The sinks that get a job for a new message that came from `source` (as stored:
    /// a `coupond send` push is `Test` whatever way it came), ended as `outcome`, and
    /// is about `action` when it is a coupon event.
    pub fn jobs_for(
        &self,
        source: Source,
        outcome: Outcome,
        action: Option<Action>,
    ) -> Vec<SinkKind> {
        let mut jobs = match action {
            Some(a) if outcome == Outcome::Applied && self.actions.contains(&a) => {
                self.sinks.clone()
            }
            _ => Vec::new(),
        };
        if let Some(forward) = self.mqtt {
            if Publish::of(forward, source, outcome).any() {
                jobs.push(SinkKind::Mqtt);
            }
        }
        // Spoken: applied messages of the speaker's actions, as they happen; never one
        // catch-up recovered (old news: SPEC §14).
        if let (Some(says), Some(a)) = (&self.speaker, action) {
            if outcome == Outcome::Applied && says.contains(&a) && source != Source::Catchup {
                jobs.push(SinkKind::Speaker);
            }
        }
        jobs
    }
}

/// What one `mqtt` job publishes: one job stands for everything a message means to the
/// broker (its forward, its event), in order with the others. Only Douyin's own pushes
/// are forwarded: never one that came from MQTT (no loops), nor a test push, which a
/// store box would take for a real one; and a test never reaches headquarters. The
/// plan queues a job only when it publishes something, and the sink publishes exactly
/// this, from the same stored source and outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish {
    /// The relay's forward (`--mqtt-forward`) of a push that came over HTTP.
    pub forward: bool,
    /// Headquarters' event: an applied coupon message that is no test.
    pub event: bool,
}

impl Publish {
    pub fn of(forward_on: bool, source: Source, outcome: Outcome) -> Publish {
        Publish {
            forward: forward_on && source == Source::Push,
            event: outcome == Outcome::Applied && source != Source::Test,
        }
    }

    pub fn any(self) -> bool {
        self.forward || self.event
    }
}

/// The relay's forward of a push, as published on `PREFIX/push/...` (`sinks::mqtt`
/// writes it, `sources::mqtt` reads it back): the signed body exactly as it came.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Forwarded {
    /// The raw body, exactly as signed.
    pub body: String,
    pub signature: Option<String>,
    pub msg_id: Option<String>,
}

/// How a message came (`messages.source`, SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Douyin's webhook over HTTP.
    Push,
    /// Recovered from Douyin's API by catch-up; stored as `reconcile` (SPEC §5, §11).
    Catchup,
    /// A push forwarded by a relay through the broker.
    Mqtt,
    /// `coupond send`'s test push.
    Test,
}

impl Source {
    pub const ALL: [Source; 4] = [Source::Push, Source::Catchup, Source::Mqtt, Source::Test];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Push => "push",
            Source::Catchup => "reconcile",
            Source::Mqtt => "mqtt",
            Source::Test => "test",
        }
    }

    pub fn parse(s: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// A request that reached the webhook path, classified, with its raw bytes.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub received_at: String,
    pub msg_id: Option<String>,
    pub signature: Option<String>,
    pub body: Vec<u8>,
    pub intake: Intake,
    pub source: Source,
    /// The dedup key (`body_sha1`) when it is not the sha1 of `body`: for a recovered
    /// record, the digest of (`verify_id`, action, time).
    pub dedup: Option<String>,
}

/// What the store did with one arrival.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    Rejected,
    /// The same body was already stored: only its delivery count went up.
    Redelivered {
        message_id: i64,
        deliveries: i64,
        outcome: Outcome,
    },
    Recorded {
        message_id: i64,
        outcome: Outcome,
        outputs: usize,
    },
}

impl Ack {
    /// Whether the message got output jobs (the outbox has work).
    pub fn queued(&self) -> bool {
        matches!(self, Ack::Recorded { outputs, .. } if *outputs > 0)
    }
}

/// What an output job is about. A job about a message reads it (`outputs.message_id`);
/// a job about no message has `message_id` NULL and its [`Task`] word in `outputs.work`.
// Jobs are read a round at a time and dropped after it: a box per coupon would cost
// more than the unused bytes of the other variants.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Work {
    /// An applied coupon message: every sink shows it.
    Coupon(JobEvent),
    /// A signed message that is no coupon event (a challenge, an invalid body): only
    /// the relay's MQTT forward carries it.
    Relayed,
    /// A job about no message (a print test; next an announcement test).
    Task(Task),
    /// The end-of-day report (`Task::Report`), with its numbers as they are when the
    /// job is taken.
    Report(Box<DayReport>),
}

/// A job about no message, as `outputs.work` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// `coupond print-test`: a test receipt on the printer.
    PrintTest,
    /// The end-of-day report on the printer (`--report-at`, `coupond report --print`);
    /// its day is in `report_jobs`. Never given up.
    Report,
    /// `coupond speak-test [--amount FEN]`: a test announcement on the speaker.
    SpeakTest(Option<u64>),
}

impl Task {
    /// One of each kind, for the round trip through the database.
    pub const ALL: [Task; 4] = [
        Task::PrintTest,
        Task::Report,
        Task::SpeakTest(None),
        Task::SpeakTest(Some(9900)),
    ];

    /// The `outputs.work` word: `print_test`, `report`, `speak_test`, or `speak_test:FEN`.
    pub fn word(self) -> String {
        match self {
            Task::PrintTest => "print_test".into(),
            Task::Report => "report".into(),
            Task::SpeakTest(None) => "speak_test".into(),
            Task::SpeakTest(Some(fen)) => format!("speak_test:{fen}"),
        }
    }

    pub fn parse(s: &str) -> Option<Task> {
        match s.split_once(':') {
            None if s == "print_test" => Some(Task::PrintTest),
            None if s == "report" => Some(Task::Report),
            None if s == "speak_test" => Some(Task::SpeakTest(None)),
            Some(("speak_test", fen)) => Some(Task::SpeakTest(Some(fen.parse().ok()?))),
            _ => None,
        }
    }
}

/// A business day's report: which day, its window and its numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayReport {
    pub date: Date,
    /// `[from, to)`, Unix seconds: `--day-starts` on `date` to the same time the next day.
    pub from: i64,
    pub to: i64,
    pub tally: DayTally,
}

/// The numbers of one business day, `[from, to)` in Unix seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DayTally {
    /// Applied verifies (核销).
    pub verify: i64,
    /// Applied cancels (撤销), whichever day their verify was.
    pub verify_cancel: i64,
    /// Applied refunds (退款).
    pub refund_success: i64,
    /// Fen: the known `pay_amount` of the verifies minus that of the cancels.
    pub pay_amount: i64,
    /// Fen: the same with `original_amount`.
    pub original_amount: i64,
    /// Verifies and cancels whose coupon has no known `pay_amount`.
    pub without_amount: i64,
    /// One entry per deal title (`None`: coupons without details), largest count first.
    pub deals: Vec<Group>,
    /// One entry per store (`poi_id`; `None`: coupons without details), largest first.
    pub stores: Vec<Group>,
    /// Applied messages recovered by catch-up (补录).
    pub recovered: i64,
    /// Requests rejected in the window: rows first received in it, with their repeats.
    pub rejected: i64,
    /// Output jobs made in the window that failed for good.
    pub failed_outputs: i64,
}

impl DayTally {
    /// Verifies minus cancels.
    pub fn net(&self) -> i64 {
        self.verify - self.verify_cancel
    }
}

/// A deal's or a store's share of the day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub key: Option<String>,
    /// Verifies minus cancels.
    pub count: i64,
    /// Fen, of the coupons with a known amount; `None` when none of them has one.
    pub pay_amount: Option<i64>,
}

/// A pending output job, with what it is to tell.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: i64,
    pub attempts: i64,
    /// Since when its news is news, in ms since the epoch: its message's arrival (a
    /// push recovered by reverify keeps its first arrival), or when it was queued.
    pub since_ms: i64,
    pub reprint: bool,
    pub work: Work,
    /// The message as it came, for the sinks that pass it on (MQTT); `None` for a
    /// [`Work::Task`].
    pub origin: Option<Origin>,
    /// While its coupon's details are being looked up (and none are known): when the
    /// job was queued (Unix ms). The outbox holds it until the details come or
    /// `--details-wait` has passed since then; being in the database, the rule holds
    /// across a restart.
    pub awaiting_details: Option<i64>,
}

impl Job {
    /// The coupon event, for sinks that only ever get applied coupon messages.
    pub fn coupon(&self) -> std::result::Result<&JobEvent, String> {
        match &self.work {
            Work::Coupon(e) => Ok(e),
            _ => Err(format!("{} is not a coupon event", self.subject())),
        }
    }

    /// What the job is about, for a log line.
    pub fn subject(&self) -> String {
        match (&self.work, &self.origin) {
            (Work::Coupon(e), _) => format!("certificate {}", e.certificate_id),
            (Work::Task(t), _) => format!("task {}", t.word()),
            (Work::Report(r), _) => format!("the report of {}", r.date),
            (Work::Relayed, Some(o)) => format!("message {}", o.message_id),
            (Work::Relayed, None) => "a message".into(),
        }
    }

    /// Whether a failed delivery is retried without limit, whatever the sink: the
    /// end-of-day report is never given up (SPEC §15), so a printer that is off at
    /// report time prints it once when it is back.
    pub fn retries_forever(&self) -> bool {
        matches!(self.work, Work::Report(_))
    }
}

/// A message as it came: what a relay forwards and headquarters' events quote.
#[derive(Debug, Clone)]
pub struct Origin {
    pub message_id: i64,
    pub source: Source,
    pub outcome: Outcome,
    pub client_key: Option<String>,
    pub account_id: Option<String>,
    pub msg_id: Option<String>,
    pub signature: Option<String>,
    /// The raw body (for a recovered message, the record).
    pub body: String,
}

/// The coupon event an output job reports.
#[derive(Debug, Clone)]
pub struct JobEvent {
    pub message_id: i64,
    pub action: Action,
    pub certificate_id: String,
    pub order_id: Option<String>,
    pub code: Option<String>,
    pub account_id: Option<String>,
    pub client_key: Option<String>,
    pub msg_time: i64,
    pub log_id: Option<String>,
    pub received_at: String,
    /// Douyin's raw body, for hooks that want every field (a recovered record's JSON
    /// when `source` is `Catchup`).
    pub body: String,
    /// A push, or a coupon recovered by catch-up (marked 补录).
    pub source: Source,
    /// What was bought, when known by the time the job is delivered (SPEC §13).
    pub details: Option<crate::details::Details>,
}

impl JobEvent {
    /// Recovered by catch-up rather than pushed: receipts and the display say 补录.
    pub fn from_catchup(&self) -> bool {
        self.source == Source::Catchup
    }

    /// A test push (`coupond send`): marked 测试 wherever it shows.
    pub fn test(&self) -> bool {
        self.source == Source::Test
    }
}

/// An output job's state (`outputs.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OutputState {
    Pending,
    Done,
    Failed,
}

impl OutputState {
    pub const ALL: [OutputState; 3] =
        [OutputState::Pending, OutputState::Done, OutputState::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            OutputState::Pending => "pending",
            OutputState::Done => "done",
            OutputState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<OutputState> {
        OutputState::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl std::fmt::Display for OutputState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A broker connection's name in `links`: the sink's (events and forward) or the
/// source's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkName {
    Mqtt,
    MqttSource,
}

impl LinkName {
    pub const ALL: [LinkName; 2] = [LinkName::Mqtt, LinkName::MqttSource];

    pub fn as_str(self) -> &'static str {
        match self {
            LinkName::Mqtt => "mqtt",
            LinkName::MqttSource => "mqtt-source",
        }
    }

    pub fn parse(s: &str) -> Option<LinkName> {
        LinkName::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl std::fmt::Display for LinkName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A broker connection's state in `links`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkStatus {
    Connecting,
    Connected,
    /// The broker keeps closing our connections soon after accepting them: most likely
    /// another client uses the same client id (see `mqtt::Reconnect`).
    DuplicateClientId,
}

impl LinkStatus {
    pub const ALL: [LinkStatus; 3] = [
        LinkStatus::Connecting,
        LinkStatus::Connected,
        LinkStatus::DuplicateClientId,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LinkStatus::Connecting => "connecting",
            LinkStatus::Connected => "connected",
            LinkStatus::DuplicateClientId => "duplicate-client-id",
        }
    }

    pub fn parse(s: &str) -> Option<LinkStatus> {
        LinkStatus::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl std::fmt::Display for LinkStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One delivery attempt of output job `id`.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub id: i64,
    pub outcome: AttemptOutcome,
}

/// How a delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Delivered: the job is `done`.
    Done,
    /// Failed with this error; it stays `pending` and is tried again.
    Retry(String),
    /// Failed with this error for the last time: the job is `failed`.
    GiveUp(String),
    /// Not delivered, and never to be (an announcement past its minute): the job is
    /// `done`, with this note in `last_error`.
    Dropped(String),
}

/// The kinds of output, in the order the daemon builds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SinkKind {
    Printer,
    Display,
    Exec,
    /// No printer, display or hook configured: one log line per applied message.
    Log,
    /// `--mqtt`: events to headquarters and, with `--mqtt-forward`, pushes to the boxes.
    Mqtt,
    /// `--speaker`: says applied verifies aloud.
    Speaker,
}

impl SinkKind {
    pub const ALL: [SinkKind; 6] = [
        SinkKind::Printer,
        SinkKind::Display,
        SinkKind::Exec,
        SinkKind::Log,
        SinkKind::Mqtt,
        SinkKind::Speaker,
    ];

    /// The `outputs.sink` word.
    pub fn name(self) -> &'static str {
        match self {
            SinkKind::Printer => "printer",
            SinkKind::Display => "display",
            SinkKind::Exec => "exec",
            SinkKind::Log => "log",
            SinkKind::Mqtt => "mqtt",
            SinkKind::Speaker => "speaker",
        }
    }

    pub fn parse(s: &str) -> Option<SinkKind> {
        SinkKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// The setting that turns it on, for a person.
    pub fn flag(self) -> &'static str {
        match self {
            SinkKind::Printer => "--printer",
            SinkKind::Display => "--display-listen",
            SinkKind::Exec => "--exec",
            SinkKind::Log => "no output flag",
            SinkKind::Mqtt => "--mqtt",
            SinkKind::Speaker => "--speaker",
        }
    }

    /// The store's own sinks a configuration has: printer, display, exec, or the log
    /// when there is none of those. (MQTT is beside them: it tells headquarters, not
    /// the store, and does not follow `--print-actions`; see `sinks::Outputs::kinds`.)
    pub fn configured(on: StoreSinks) -> Vec<SinkKind> {
        let kinds: Vec<SinkKind> = [
            (on.printer, SinkKind::Printer),
            (on.display, SinkKind::Display),
            (on.exec, SinkKind::Exec),
        ]
        .into_iter()
        .filter_map(|(on, kind)| on.then_some(kind))
        .collect();
        if kinds.is_empty() {
            vec![SinkKind::Log]
        } else {
            kinds
        }
    }
}

/// Which of the store's own sinks (those `--print-actions` gates) are set, by name.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreSinks {
    pub printer: bool,
    pub display: bool,
    pub exec: bool,
}

impl std::fmt::Display for SinkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_jobs_forward_only_douyins_own_pushes_and_report_no_test() {
        let forward = OutputPlan::new(vec![SinkKind::Log], Action::ALL.to_vec(), Some(true));
        let events = OutputPlan::new(vec![SinkKind::Log], Action::ALL.to_vec(), Some(false));
        let mqtt = |plan: &OutputPlan, source, outcome| {
            plan.jobs_for(source, outcome, Some(Action::Verify))
                .contains(&SinkKind::Mqtt)
        };
        use Outcome::*;
        use Source::*;
        for (source, outcome, forwarded, event) in [
            (Push, Applied, true, true),
            (Push, Stale, true, false),
            (Push, Challenge, true, false),
            (Mqtt, Applied, false, true),
            (Mqtt, Duplicate, false, false),
            (Catchup, Applied, false, true),
            (Test, Applied, false, false),
        ] {
            assert_eq!(
                Publish::of(true, source, outcome),
                Publish {
                    forward: forwarded,
                    event
                },
                "{source:?} {outcome:?}"
            );
            assert_eq!(
                mqtt(&forward, source, outcome),
                forwarded || event,
                "{source:?} {outcome:?}"
            );
            assert_eq!(
                mqtt(&events, source, outcome),
                event,
                "{source:?} {outcome:?}"
            );
        }
    }

    #[test]
    fn the_stores_own_sinks_get_applied_coupons_of_the_print_actions_only() {
        let plan = OutputPlan::new(
            vec![SinkKind::Printer, SinkKind::Exec],
            vec![Action::Verify],
            None,
        );
        let own = [SinkKind::Printer, SinkKind::Exec];
        assert_eq!(
            plan.jobs_for(Source::Push, Outcome::Applied, Some(Action::Verify)),
            own
        );
        assert_eq!(
            plan.jobs_for(Source::Test, Outcome::Applied, Some(Action::Verify)),
            own
        );
        assert!(plan
            .jobs_for(Source::Push, Outcome::Applied, Some(Action::VerifyCancel))
            .is_empty());
        assert!(plan
            .jobs_for(Source::Push, Outcome::Duplicate, Some(Action::Verify))
            .is_empty());
        assert!(plan
            .jobs_for(Source::Push, Outcome::Applied, None)
            .is_empty());
        assert_eq!(plan.kinds(), own);
    }

    #[test]
    fn a_task_word_carries_the_speak_tests_amount() {
        for task in Task::ALL {
            assert_eq!(Task::parse(&task.word()), Some(task));
        }
        assert_eq!(Task::SpeakTest(Some(1005)).word(), "speak_test:1005");
        for bad in [
            "",
            "speak_test:",
            "speak_test:-1",
            "speak_test:x",
            "print_test:1",
            "other",
        ] {
            assert_eq!(Task::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_speaker_says_applied_messages_of_its_own_actions_and_never_recovered_ones() {
        let plan = OutputPlan::new(vec![SinkKind::Log], vec![Action::RefundSuccess], None)
            .speaking(vec![Action::Verify]);
        let spoken = |source, outcome, action| {
            plan.jobs_for(source, outcome, Some(action))
                .contains(&SinkKind::Speaker)
        };
        use Outcome::*;
        use Source::*;
        for source in [Push, Mqtt, Test] {
            assert!(spoken(source, Applied, Action::Verify), "{source:?}");
        }
        assert!(!spoken(Catchup, Applied, Action::Verify));
        assert!(!spoken(Push, Applied, Action::RefundSuccess));
        assert!(!spoken(Push, Stale, Action::Verify));
        assert!(!spoken(Push, Duplicate, Action::Verify));
        assert!(plan.jobs_for(Push, Applied, None).is_empty());
        // --print-actions does not gate it: a verify is said without a log line.
        assert_eq!(
            plan.jobs_for(Push, Applied, Some(Action::Verify)),
            [SinkKind::Speaker]
        );
        assert_eq!(plan.kinds(), [SinkKind::Log, SinkKind::Speaker]);
    }
}
