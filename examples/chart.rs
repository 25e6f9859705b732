//! Draws baseline vs patched decode tokens/s per model, backend and machine from
//! `benchmarks/matrix.jsonl` into `benchmarks/chart.svg` (the latest row of each
//! model/backend/machine triple, CPU f32-precision rows apart; log scale; each bar pair labelled with its fidelity verdict).
//!
//! ```text
//! cargo run --example chart [-- MATRIX.jsonl OUT.svg]
//! ```

use std::fmt::Write as _;
use std::process::ExitCode;

struct Row {
    label: String,
    baseline: f64,
    patched: f64,
    verdict: String,
    speedup: Option<f64>,
}

fn read_rows(path: &str) -> Result<Vec<Row>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut latest: Vec<(String, Row)> = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("{path}:{}: {e}", i + 1))?;
        // Machines differ between records (the dev box has been an AMD EPYC and an
        // Intel Xeon; GPUs an H100 and an H200): one bar pair per machine too.
        let hardware = v["hardware"]
            .as_str()
            .unwrap_or("?")
            .replace("(R)", "")
            .replace(" Processor", "");
        // A row measured with the CPU kernels' f32 precision is a different
        // arithmetic from the default MLX-exact one: its own bar pair.
        let precision = match v["cpu_precision"].as_str() {
            Some(p) if p != "exact" => format!(", {p} precision"),
            _ => String::new(),
        };
        let key = format!(
            "{} / {}, {hardware}{precision}",
            v["model_id"].as_str().unwrap_or("?"),
            v["backend"].as_str().unwrap_or("?")
        );
        let row = Row {
            label: key.clone(),
            baseline: v["baseline"]["decode_tps_median"].as_f64().unwrap_or(0.0),
            patched: v["patched"]["decode_tps_median"].as_f64().unwrap_or(0.0),
            verdict: v["fidelity"]["verdict"].as_str().unwrap_or("?").to_string(),
            speedup: v["speedup"].as_f64(),
        };
        match latest.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = row,
            None => latest.push((key, row)),
        }
    }
    Ok(latest.into_iter().map(|(_, r)| r).collect())
}

fn svg(rows: &[Row]) -> String {
    let (w, bar_h, gap, left) = (1050.0, 18.0, 22.0, 480.0);
    let h = 70.0 + rows.len() as f64 * (2.0 * bar_h + gap);
    let max = rows
        .iter()
        .map(|r| r.baseline.max(r.patched))
        .fold(1.0, f64::max);
    let min = rows
        .iter()
        .flat_map(|r| [r.baseline, r.patched])
        .filter(|v| *v > 0.0)
        .fold(max, f64::min);
    let (lo, hi) = ((min / 2.0).log10().floor(), max.log10().ceil());
    let x = |v: f64| left + (v.max(10f64.powf(lo)).log10() - lo) / (hi - lo) * (w - left - 120.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<text x="10" y="20" font-size="15">zmlx: decode tokens/s, baseline (grey) vs patched (blue), log scale</text>"#
    );
    for p in (lo as i32)..=(hi as i32) {
        let xv = x(10f64.powi(p));
        let _ = writeln!(
            s,
            r##"<line x1="{xv}" y1="32" x2="{xv}" y2="{}" stroke="#ddd"/><text x="{xv}" y="{}" text-anchor="middle">{}</text>"##,
            h - 25.0,
            h - 10.0,
            10f64.powi(p)
        );
    }
    for (i, r) in rows.iter().enumerate() {
        let y = 40.0 + i as f64 * (2.0 * bar_h + gap);
        let note = match r.speedup {
            Some(x) => format!("{x:.1}x, fidelity {}", r.verdict),
            None => format!("fidelity {} (no speedup claimed)", r.verdict),
        };
        let _ = writeln!(
            s,
            r##"<text x="10" y="{}">{}</text><text x="10" y="{}" fill="#555">{note}</text>"##,
            y + 13.0,
            r.label,
            y + 2.0 * bar_h + 2.0
        );
        for (j, (v, color)) in [(r.baseline, "#999"), (r.patched, "#2a6fdb")]
            .iter()
            .enumerate()
        {
            let yy = y + j as f64 * bar_h;
            let _ = writeln!(
                s,
                r##"<rect x="{left}" y="{yy}" width="{}" height="{}" fill="{color}"/><text x="{}" y="{}">{v:.2}</text>"##,
                (x(*v) - left).max(1.0),
                bar_h - 3.0,
                x(*v) + 4.0,
                yy + 12.0
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let input = args
        .first()
        .map(String::as_str)
        .unwrap_or("benchmarks/matrix.jsonl");
    let output = args
        .get(1)
        .map(String::as_str)
        .unwrap_or("benchmarks/chart.svg");
    match read_rows(input) {
        Ok(rows) if rows.is_empty() => {
            eprintln!("{input} has no rows");
            ExitCode::FAILURE
        }
        Ok(rows) => match std::fs::write(output, svg(&rows)) {
            Ok(()) => {
                println!(
                    "wrote {output} ({} model/backend/machine bar pairs)",
                    rows.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{output}: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
