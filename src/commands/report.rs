//! `coupond report`: the end-of-day report (日结单, SPEC §15) of one business day, as
//! text, as JSON for headquarters' scripts, or printed.
//!
//! The day runs from `--day-starts` on `--date` to the same local time the next day;
//! the numbers are the store's ([`Store::day_report`]), the layout the receipt's
//! ([`receipt::day_lines`]): the text is the receipt as `--paper-width` paper shows it,
//! so what the owner reads at the terminal is what the printer gives.

use crate::closing::{business_date_at, business_day};
use crate::commands::print_test::{print_sheet, say_err, say_out, Sheet};
use crate::config::ReportConfig;
use crate::model::{DayReport, Group};
use crate::schedule::{BoxZone, Date, TimeOfDay};
use crate::sinks::receipt;
use crate::store::Store;
use crate::time;

pub fn run(cfg: &ReportConfig) -> Result<(), String> {
    let now = time::now_secs();
    let date = pick_date(cfg.date, cfg.day_starts, cfg.keep_days, now)?;
    let (from, to) = business_day(&BoxZone, date, cfg.day_starts);
    let store = Store::open_existing(&cfg.db, true)?;
    let report = store
        .day_report(date, from, to)
        .map_err(|e| format!("cannot read database {}: {e}", cfg.db.display()))?;
    drop(store);
    if cfg.json {
        println!("{}", json(&report, &cfg.receipts.poi_names));
    } else {
        let lines = receipt::day_lines(
            &report,
            &cfg.receipts.poi_names,
            cfg.receipts.store_name.as_deref(),
            now,
        );
        for line in receipt::render_text(&lines, cfg.receipts.paper_columns) {
            println!("{}", line.trim_end());
        }
    }
    if cfg.print {
        print(cfg, &report)?;
    }
    Ok(())
}

/// The day to report: `--date`, else the business day in progress. A day from before
/// the retention is refused (its messages may be pruned: a report must never be quietly
/// short), and so is a day that has not begun.
pub fn pick_date(
    date: Option<Date>,
    starts: TimeOfDay,
    keep_days: Option<u32>,
    now: i64,
) -> Result<Date, String> {
    let today = business_date_at(&BoxZone, now, starts);
    let Some(date) = date else {
        return Ok(today);
    };
    if date > today {
        return Err(format!(
            "{date} has not begun yet: the business day in progress is {today}"
        ));
    }
    if let Some(days) = keep_days {
        let (from, _) = business_day(&BoxZone, date, starts);
        if from < now - i64::from(days) * 86_400 {
            return Err(format!(
                "{date} is older than --keep-days {days}: its messages may have been pruned, \
                 so its report would be short (the oldest day kept whole is {})",
                Date::from_days(today.days() - i64::from(days) + 1)
            ));
        }
    }
    Ok(date)
}

#[derive(serde::Serialize)]
struct Json<'a> {
    date: String,
    from: String,
    to: String,
    verify: i64,
    verify_cancel: i64,
    refund_success: i64,
    net: i64,
    pay_amount: i64,
    original_amount: i64,
    without_amount: i64,
    recovered: i64,
    rejected: i64,
    failed_outputs: i64,
    deals: Vec<Deal<'a>>,
    stores: Vec<StoreJson<'a>>,
}

#[derive(serde::Serialize)]
struct Deal<'a> {
    title: Option<&'a str>,
    count: i64,
    pay_amount: Option<i64>,
}

#[derive(serde::Serialize)]
struct StoreJson<'a> {
    poi_id: Option<&'a str>,
    name: Option<&'a str>,
    count: i64,
    pay_amount: Option<i64>,
}

/// The report as one JSON object, with SPEC §15's field names; amounts in fen, times
/// RFC 3339 with the box's offset. A deal or store whose coupons have no known amount
/// has `pay_amount` null; `title` / `poi_id` null gathers the coupons without details.
pub fn json(r: &DayReport, poi_names: &[(String, String)]) -> String {
    let t = &r.tally;
    let name = |g: &Group| {
        let id = g.key.as_deref()?;
        poi_names
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, n)| n.as_str())
    };
    let doc = Json {
        date: r.date.to_string(),
        from: time::rfc3339_local(r.from),
        to: time::rfc3339_local(r.to),
        verify: t.verify,
        verify_cancel: t.verify_cancel,
        refund_success: t.refund_success,
        net: t.net(),
        pay_amount: t.pay_amount,
        original_amount: t.original_amount,
        without_amount: t.without_amount,
        recovered: t.recovered,
        rejected: t.rejected,
        failed_outputs: t.failed_outputs,
        deals: t
            .deals
            .iter()
            .map(|g| Deal {
                title: g.key.as_deref(),
                count: g.count,
                pay_amount: g.pay_amount,
            })
            .collect(),
        stores: t
            .stores
            .iter()
            .map(|g| StoreJson {
                poi_id: g.key.as_deref(),
                name: name(g),
                count: g.count,
                pay_amount: g.pay_amount,
            })
            .collect(),
    };
    serde_json::to_string(&doc).expect("plain data serializes")
}

/// Prints the report's receipt: through the running daemon's printer queue when one
/// runs (it counts the day again when it prints, with its own settings), else straight
/// to `--printer`.
fn print(cfg: &ReportConfig, report: &DayReport) -> Result<(), String> {
    let printer = cfg.receipts.printer().ok_or("--print needs --printer")?;
    let columns = cfg.receipts.paper_columns;
    let lines = receipt::day_lines(
        report,
        &cfg.receipts.poi_names,
        cfg.receipts.store_name.as_deref(),
        time::now_secs(),
    );
    let what = format!("the end-of-day report of {}", report.date);
    let window = (report.from, report.to);
    let sheet = Sheet {
        command: "report --print",
        what: &what,
        bytes: receipt::escpos(&lines, columns),
        // Queued whatever was printed before: only the schedule prints a day once.
        queue: &|store| {
            let id = store.queue_report(report.date, window, false)?;
            id.ok_or(rusqlite::Error::QueryReturnedNoRows)
        },
        say: if cfg.json { say_err } else { say_out },
    };
    print_sheet(&cfg.db, &printer, cfg.wait, sheet)
}
