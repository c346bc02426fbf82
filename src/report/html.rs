//! The report page. The markup is also well-formed XML (every tag closed, only the five XML
//! entities), so tests can parse the whole page and a broken drawing cannot hide.

use serde_json::Value;

use super::alphas::{evolution, heatmap, AlphaSnapshot};
use super::cell;
use super::chart::{line_chart, Chart, Series};
use super::edges::Edges;
use super::log::{SearchEpoch, TrainEpoch};
use super::nb201;
use super::svg::{document, esc, op_colour};
use super::{cell_svg, nb201_cell_svg, Run, Search};
use crate::nas::space::nb201::Nb201Arch;
use crate::nas::space::Arch;
use crate::nas::{margins, Genotype, Primitive};

const STYLE: &str = "\
body{margin:0;background:#f3f4f6;color:#222;font:14px/1.45 'DejaVu Sans',Helvetica,Arial,sans-serif}\
main{max-width:1480px;margin:0 auto;padding:18px 24px 40px}\
h1{font-size:24px;margin:0}\
.sub{color:#666;margin:2px 0 16px}\
section{background:#fff;border:1px solid #e1e4e8;border-radius:8px;padding:14px 18px;margin:0 0 16px}\
h2{font-size:17px;margin:0 0 10px}\
h3{font-size:14px;margin:14px 0 6px;color:#444}\
.cards{display:flex;flex-wrap:wrap;gap:10px;margin-bottom:6px}\
.card{border:1px solid #e1e4e8;border-radius:6px;padding:7px 12px;min-width:128px}\
.card .k{color:#666;font-size:12px}\
.card .v{font-size:21px;font-weight:bold}\
.card .d{color:#666;font-size:12px}\
.row{display:flex;flex-wrap:wrap;gap:22px;align-items:flex-start}\
svg{max-width:100%;height:auto}\
pre{background:#f6f8fa;padding:8px 10px;border-radius:4px;white-space:pre-wrap;word-break:break-all;font-size:12px;margin:8px 0 0}\
.warn{background:#fff4e5;border:1px solid #f0b45a;padding:7px 12px;border-radius:6px;margin:0 0 10px}\
.error{color:#b00020}\
.kv{display:grid;grid-template-columns:repeat(auto-fill,minmax(310px,1fr));gap:1px 24px;font-size:12.5px}\
.kv div{overflow-wrap:anywhere}\
.kv b{font-weight:normal;color:#666}\
.legend{margin:4px 0 6px}\
.legend span{display:inline-flex;align-items:center;margin-right:16px;font:12px 'DejaVu Sans Mono',monospace}\
.legend i{display:inline-block;width:20px;height:3px;margin-right:6px}\
.legend i.dash{height:0;border-top:3px dashed}\
.note{color:#666;font-size:12.5px;margin:4px 0 0}\
summary{cursor:pointer;color:#444}\
table{border-collapse:collapse;font-size:13px}\
th,td{border-bottom:1px solid #e1e4e8;padding:4px 10px;text-align:left;vertical-align:top}\
td code{font-size:11px;word-break:break-all}";

const TRAIN_COLOUR: &str = "#1f77b4";
const EVAL_COLOUR: &str = "#e6550d";

pub(crate) fn render(run: &Run) -> String {
    let kind = match (&run.search, &run.train) {
        (Some(_), Some(_)) => "search and training run",
        (Some(_), None) => "search run",
        _ => "training run",
    };
    let mut body = format!(
        "<h1>darts report: {kind}</h1><p class=\"sub\">{}</p>",
        esc(&run.name)
    );
    for w in &run.warnings {
        body += &format!("<div class=\"warn\">⚠ {}</div>", esc(w));
    }
    body += &summary(run);
    body += &genotype_section(run.genotype.as_ref());
    if let Some(search) = &run.search {
        body += &search_curves(&search.epochs);
        body += &alpha_sections(search);
    }
    if let Some(train) = &run.train {
        body += &train_curves(train);
    }
    page(&run.name, &body)
}

/// The whole document around `body`, titled `title`.
pub(crate) fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\
         <title>darts report: {}</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>\n",
        esc(title)
    )
}

pub(crate) fn section(title: &str, content: &str) -> String {
    format!("<section><h2>{}</h2>{content}</section>", esc(title))
}

fn card(key: &str, value: &str, detail: &str) -> String {
    format!(
        "<div class=\"card\"><div class=\"k\">{}</div><div class=\"v\">{}</div><div class=\"d\">{}</div></div>",
        esc(key),
        esc(value),
        esc(detail)
    )
}

/// The final numbers of each log, then the run's config and results files.
fn summary(run: &Run) -> String {
    let mut out = String::new();
    if let Some(s) = &run.search {
        out += &metric_cards(
            "search",
            &s.epochs.iter().map(search_row).collect::<Vec<_>>(),
            "val",
        );
    }
    if let Some(t) = &run.train {
        out += &metric_cards(
            "training",
            &t.iter().map(train_row).collect::<Vec<_>>(),
            "test",
        );
    }
    for (name, value) in [("config.json", &run.config), ("results.json", &run.results)] {
        let Some(value) = value else { continue };
        let mut pairs = Vec::new();
        flatten("", value, &mut pairs);
        let items: String = pairs
            .iter()
            .map(|(k, v)| format!("<div><b>{}</b> {}</div>", esc(k), esc(v)))
            .collect();
        out += &format!("<details open=\"open\"><summary>{name}</summary><div class=\"kv\">{items}</div></details>");
    }
    section("Summary", &out)
}

/// One epoch's numbers, shared by both kinds of log: (epoch, lr, train loss, train accuracy,
/// held-out loss, held-out accuracy, seconds).
type Row = (
    usize,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
);

fn search_row(e: &SearchEpoch) -> Row {
    (
        e.epoch,
        e.lr,
        e.train_loss,
        e.train_accuracy,
        e.val_loss,
        e.val_accuracy,
        e.seconds,
    )
}

fn train_row(e: &TrainEpoch) -> Row {
    (
        e.epoch,
        e.lr,
        e.train_loss,
        e.train_accuracy,
        e.test_loss,
        e.test_accuracy,
        e.seconds,
    )
}

fn metric_cards(what: &str, rows: &[Row], held_out: &str) -> String {
    let Some(last) = rows.last() else {
        return format!("<p class=\"warn\">The {what} log has no complete epoch yet.</p>");
    };
    let pct = |v: Option<f64>| v.map_or("–".into(), |v| format!("{:.2}%", 100.0 * v));
    let num = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.4}"));
    let best =
        rows.iter()
            .filter_map(|r| Some((r.5?, r.0)))
            .fold(None, |b: Option<(f64, usize)>, x| {
                if b.is_some_and(|b| b.0 >= x.0) {
                    b
                } else {
                    Some(x)
                }
            });
    let best = best.map_or(String::new(), |(v, e)| {
        format!("best {:.2}% at epoch {e}", 100.0 * v)
    });
    let total: f64 = rows.iter().filter_map(|r| r.6).sum();
    let mut out = format!("<h3>{what}: final numbers</h3><div class=\"cards\">");
    out += &card(
        "epochs",
        &last.0.to_string(),
        &format!("{} logged", rows.len()),
    );
    out += &card(&format!("{held_out} accuracy"), &pct(last.5), &best);
    out += &card("train accuracy", &pct(last.3), "");
    out += &card(&format!("{held_out} loss"), &num(last.4), "");
    out += &card("train loss", &num(last.2), "");
    out += &card(
        "learning rate",
        &last.1.map_or("–".into(), short),
        "last epoch",
    );
    out += &card(
        "time",
        &duration(total),
        &last
            .6
            .map_or(String::new(), |s| format!("last epoch {}", duration(s))),
    );
    out + "</div>"
}

/// A number in at most four significant digits, in scientific notation when tiny or huge.
fn short(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if (1e-3..1e4).contains(&a) {
        let decimals = (3 - a.log10().floor() as i32).max(0) as usize;
        let s = format!("{v:.decimals$}");
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.')
        } else {
            &s
        };
        s.to_string()
    } else {
        format!("{v:.2e}")
    }
}

fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m {:02}s", (s / 60.0) as u64, s as u64 % 60)
    } else {
        format!("{}h {:02}m", (s / 3600.0) as u64, (s as u64 / 60) % 60)
    }
}

/// Nested JSON as dotted keys and short values (strings unquoted, arrays compact).
fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        // Lists of names or numbers (the primitives) read better without quotes and brackets.
        Value::Array(items) if items.iter().all(|v| !v.is_array() && !v.is_object()) => {
            let items: Vec<String> = items
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .collect();
            out.push((prefix.to_string(), items.join(", ")));
        }
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

fn genotype_section(genotype: Option<&(Arch, String)>) -> String {
    match genotype {
        None => section(
            "Genotype",
            "<p class=\"note\">No genotype yet: no genotype.json and no epoch that logged one.</p>",
        ),
        Some((Arch::Darts(g), source)) => darts_genotype(g, source),
        Some((Arch::Nb201(a), source)) => nb201_genotype(a, source),
    }
}

fn nb201_genotype(arch: &Nb201Arch, source: &str) -> String {
    section(
        "Genotype",
        &format!(
            "{}{}<p class=\"note\">From {}. Node 0 is the cell's input, node 3 its output; \
             each node sums its incoming edges, each labelled with its op. Dashed grey: `none`, \
             no edge.</p><pre>{}</pre>",
            nb201_cell_svg(arch),
            legend(&nb201::legend_entries(arch)),
            esc(source),
            esc(&arch.to_string())
        ),
    )
}

fn darts_genotype(g: &Genotype, source: &str) -> String {
    // The cells as separate drawings that wrap onto two rows when a deep cell makes them too
    // wide to share one, instead of one `genotype_svg` scaled down until its labels are tiny.
    let cells = [false, true].map(|reduce| cell_svg(g, reduce));
    let drawing = match cells {
        [Ok(normal), Ok(reduce)] => format!(
            "<div class=\"row\">{normal}{reduce}</div>{}",
            legend(&cell::legend_entries(g))
        ),
        [Err(e), _] | [_, Err(e)] => format!(
            "<p class=\"error\">cannot draw the genotype: {}</p>",
            esc(&e.to_string())
        ),
    };
    section(
        "Genotype",
        &format!(
            "{drawing}<p class=\"note\">From {}. Edges are labelled with their op; grey edges \
             concatenate nodes into the cell output c<sub>k</sub>.</p><pre>{}</pre>",
            esc(source),
            esc(&g.to_string())
        ),
    )
}

/// A line of (name, colour, dashed) swatches, for the drawings that share one legend.
fn legend(entries: &[(&str, &str, bool)]) -> String {
    let items: String = entries
        .iter()
        .map(|&(name, colour, dashed)| {
            let style = if dashed {
                format!("class=\"dash\" style=\"border-color:{colour}\"")
            } else {
                format!("style=\"background:{colour}\"")
            };
            format!("<span><i {style}></i>{}</span>", esc(name))
        })
        .collect();
    format!("<div class=\"legend\">{items}</div>")
}

fn chart_svg(title: &str, y_label: &str, series: &[Series]) -> String {
    let chart = Chart {
        title,
        x_label: "epoch",
        y_label,
        width: 400.0,
        height: 280.0,
        y_range: None,
        legend: true,
        frame: None,
        font: 12.0,
    };
    document(chart.width, chart.height, &line_chart(&chart, series))
}

/// A series from the epochs where `value` is known and finite.
fn series(
    name: &str,
    colour: &'static str,
    dashed: bool,
    rows: &[Row],
    value: impl Fn(&Row) -> Option<f64>,
) -> Series {
    Series {
        name: name.to_string(),
        colour,
        points: rows
            .iter()
            .filter_map(|r| Some((r.0 as f64, value(r)?)))
            .filter(|p| p.1.is_finite())
            .collect(),
        dashed,
    }
}

fn curves(title: &str, rows: &[Row], held_out: &str) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let loss = [
        series("train", TRAIN_COLOUR, false, rows, |r| r.2),
        series(held_out, EVAL_COLOUR, false, rows, |r| r.4),
    ];
    let acc = [
        series("train", TRAIN_COLOUR, false, rows, |r| {
            r.3.map(|v| 100.0 * v)
        }),
        series(held_out, EVAL_COLOUR, false, rows, |r| {
            r.5.map(|v| 100.0 * v)
        }),
    ];
    let lr = [series("lr", "#555555", false, rows, |r| r.1)];
    section(
        title,
        &format!(
            "<div class=\"row\">{}{}{}</div>",
            chart_svg("loss", "cross-entropy", &loss),
            chart_svg("accuracy", "accuracy (%)", &acc),
            chart_svg("learning rate", "lr", &lr)
        ),
    )
}

fn search_curves(epochs: &[SearchEpoch]) -> String {
    curves(
        "Search curves",
        &epochs.iter().map(search_row).collect::<Vec<_>>(),
        "val",
    )
}

fn train_curves(epochs: &[TrainEpoch]) -> String {
    curves(
        "Training curves",
        &epochs.iter().map(train_row).collect::<Vec<_>>(),
        "test",
    )
}

/// The (row, column) of each alpha that `arch` kept (its reduction cell's if `reduce`), where
/// its op is searched over and its cell has the searched shape.
fn kept(arch: &Arch, reduce: bool, search: &Search) -> Vec<(usize, usize)> {
    let col = |op: Primitive| search.primitives.iter().position(|&q| q == op);
    match (arch, search.edges) {
        (Arch::Darts(g), Some(edges @ Edges::Darts(steps))) => {
            let cell = if reduce { &g.reduce } else { &g.normal };
            if 2 * steps != cell.len() {
                return Vec::new();
            }
            let rows = edges.rows();
            cell.iter()
                .enumerate()
                .filter_map(|(p, &(op, input))| {
                    let row = rows
                        .iter()
                        .position(|e| (e.group, e.from) == (p / 2, input))?;
                    Some((row, col(op)?))
                })
                .collect()
        }
        (Arch::Nb201(a), Some(Edges::Nb201)) => (a.ops.iter().enumerate())
            .filter_map(|(row, &op)| Some((row, col(op.into())?)))
            .collect(),
        _ => Vec::new(),
    }
}

fn alpha_sections(search: &Search) -> String {
    let Some(edges) = search.edges else {
        return section(
            "Architecture weights",
            "<p class=\"note\">No epoch logged alphas.</p>",
        );
    };
    let cells = |reduce: bool| -> Vec<AlphaSnapshot> {
        search
            .epochs
            .iter()
            .filter_map(|e| {
                let rows = if reduce {
                    e.alphas_reduce.as_ref()
                } else {
                    e.alphas_normal.as_ref()
                };
                Some((e.epoch, rows?.as_slice()))
            })
            .collect()
    };
    // The cells, and the phrases that say what a row of the drawings is.
    let (names, into, per): (&[(bool, &str)], _, _) = match edges {
        Edges::Darts(_) => (
            &[(false, "normal cell"), (true, "reduction cell")],
            "an intermediate node",
            "intermediate node",
        ),
        Edges::Nb201 => (
            &[(false, "cell")],
            "node j from node i (j←i)",
            "node the edges go into",
        ),
    };
    let rows = edges.rows();
    let mut warning = String::new();
    let mut maps = String::new();
    let mut moves = String::new();
    for &(reduce, name) in names {
        let history = cells(reduce);
        let Some(&(epoch, last)) = history.last() else {
            continue;
        };
        // Outline what the genotype derived at that same epoch kept.
        let genotype = search
            .epochs
            .iter()
            .find(|e| e.epoch == epoch)
            .and_then(|e| e.genotype.as_ref());
        let kept_pairs = genotype.map_or(Vec::new(), |a| kept(a, reduce, search));
        let flat: Vec<f32> = last.iter().flatten().map(|&v| v as f32).collect();
        // DARTS genotypes never keep `none`, so its margin is over the best other op.
        let skip_none = matches!(edges, Edges::Darts(_));
        let leading = margins::margins("", &flat, &search.primitives, skip_none);
        let row_margins: Vec<Option<f64>> = (0..last.len())
            .map(|r| {
                leading
                    .iter()
                    .find(|m| m.edge == r)
                    .map(|m| m.margin as f64)
            })
            .collect();
        if !reduce && margins::nearly_uniform(&flat, search.primitives.len()) {
            warning = format!(
                "<div class=\"warn\">⚠ The alphas are still nearly uniform: on most edges of the \
                 {name} no op reaches {}× the uniform weight, so the genotype is an argmax over \
                 noise. Search longer (--epochs) or with a larger --arch-lr.</div>",
                margins::DECIDED_FACTOR
            );
        }
        maps += &heatmap(
            &format!("{name}, epoch {epoch}"),
            last,
            &search.primitives,
            &rows,
            &kept_pairs,
            &row_margins,
        );
        moves += &evolution(name, &history, &search.primitives, &rows, &kept_pairs);
    }
    let entries: Vec<(&str, &str, bool)> = search
        .primitives
        .iter()
        .map(|&op| (op.name(), op_colour(op), op == Primitive::None))
        .collect();
    let legend = legend(&entries);
    let none = if matches!(edges, Edges::Darts(_)) {
        " (none left out: DARTS genotypes never keep it)"
    } else {
        ""
    };
    section(
        "Final architecture weights (softmax of α)",
        &format!(
            "{warning}<div class=\"row\">{maps}</div><p class=\"note\">Each row is an edge \
             into {into}, each column an op; colour runs from the smallest to the largest \
             weight of the cell. Outlined: the (edge, op) pairs the genotype of that epoch kept. \
             Margin: the leading op's weight minus the runner-up's{none}.</p>"
        ),
    ) + &section(
        "Architecture weights over the epochs",
        &format!(
            "{legend}{moves}<p class=\"note\">One chart per edge, a row \
             per {per}, one line per op, all on one scale. Framed: edges the genotype \
             kept, with the op it kept named in the title.</p>"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_flattening() {
        assert_eq!(short(0.0), "0");
        assert_eq!(short(0.025), "0.025");
        assert_eq!(short(0.123456), "0.1235");
        assert_eq!(short(12.5), "12.5");
        assert_eq!(short(3e-5), "3.00e-5");
        assert_eq!(duration(4.24), "4.2s");
        assert_eq!(duration(192.0), "3m 12s");
        assert_eq!(duration(3.0 * 3600.0 + 125.0), "3h 02m");
        let mut out = Vec::new();
        flatten(
            "",
            &serde_json::json!({"a": {"b": 1, "c": "x"}, "d": [1, "y"], "e": [[1]]}),
            &mut out,
        );
        let expected = [("a.b", "1"), ("a.c", "x"), ("d", "1, y"), ("e", "[[1]]")]
            .map(|(k, v)| (k.to_string(), v.to_string()));
        assert_eq!(out, expected);
    }
}
