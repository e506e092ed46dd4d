//! The figure: `docs/benchmarks.svg`, time against n on log-log axes for MatMul and
//! Cholesky, naive loops and BLAS, forward (solid) and backward (dashed), drawn with
//! plotters' SVG backend.

use crate::cases::Results;
use bench_report::Res;
use plotters::prelude::*;
use std::path::Path;

struct Series {
    label: &'static str,
    colour: RGBColor,
    backward: bool,
    points: Vec<(f64, f64)>,
}

fn series(
    label: &'static str,
    colour: RGBColor,
    backward: bool,
    points: impl Iterator<Item = (usize, Option<f64>)>,
) -> Series {
    let points = points
        .filter_map(|(n, t)| t.map(|t| (n as f64, t)))
        .collect();
    Series {
        label,
        colour,
        backward,
        points,
    }
}

const BLAS_COLOUR: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const IJK_COLOUR: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const IKJ_COLOUR: RGBColor = RGBColor(0xff, 0x7f, 0x0e);
const ALT_COLOUR: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);

fn panels(r: &Results) -> Vec<(String, Vec<Series>)> {
    let mm = &r.single.matmul;
    let ch = &r.single.chol;
    vec![
        (
            "MatMul C = AB, f64, 1 thread".to_string(),
            vec![
                series(
                    "naive i-j-k forward",
                    IJK_COLOUR,
                    false,
                    mm.iter().map(|x| (x.n, x.ijk)),
                ),
                series(
                    "naive i-k-j forward",
                    IKJ_COLOUR,
                    false,
                    mm.iter().map(|x| (x.n, x.ikj)),
                ),
                series(
                    "naive backward",
                    IJK_COLOUR,
                    true,
                    mm.iter().map(|x| (x.n, x.naive_bwd)),
                ),
                series(
                    "BLAS forward",
                    BLAS_COLOUR,
                    false,
                    mm.iter().map(|x| (x.n, Some(x.fwd))),
                ),
                series(
                    "BLAS backward",
                    BLAS_COLOUR,
                    true,
                    mm.iter().map(|x| (x.n, Some(x.bwd))),
                ),
            ],
        ),
        (
            "Cholesky A = LLᵀ, f64, 1 thread".to_string(),
            vec![
                series(
                    "naive forward",
                    IJK_COLOUR,
                    false,
                    ch.iter().map(|x| (x.n, x.naive_fwd)),
                ),
                series(
                    "naive backward",
                    IJK_COLOUR,
                    true,
                    ch.iter().map(|x| (x.n, x.naive_bwd)),
                ),
                series(
                    "LAPACK forward",
                    BLAS_COLOUR,
                    false,
                    ch.iter().map(|x| (x.n, Some(x.fwd))),
                ),
                series(
                    "BLAS backward",
                    BLAS_COLOUR,
                    true,
                    ch.iter().map(|x| (x.n, Some(x.bwd))),
                ),
                series(
                    "symbolic backward",
                    ALT_COLOUR,
                    true,
                    ch.iter().map(|x| (x.n, Some(x.symbolic))),
                ),
            ],
        ),
    ]
}

/// Draws the figure of these results into `path`.
pub fn write_svg(path: &Path, r: &Results) -> Res<()> {
    let panels = panels(r);
    let root = SVGBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((1, panels.len()));
    for (area, (title, all)) in areas.iter().zip(&panels) {
        let pts = all.iter().flat_map(|s| s.points.iter().copied());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for (x, y) in pts {
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
        if x0 > x1 {
            continue;
        }
        let mut sizes: Vec<f64> = all
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .collect();
        sizes.sort_by(f64::total_cmp);
        sizes.dedup();
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                (x0 / 1.3..x1 * 1.3).log_scale().with_key_points(sizes),
                (y0 / 3.0..y1 * 3.0).log_scale(),
            )?;
        chart
            .configure_mesh()
            .x_desc("n (matrices n×n)")
            .y_desc("median time per call (s)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0e}"))
            .draw()?;
        for s in all.iter().filter(|s| !s.points.is_empty()) {
            let style = s.colour.stroke_width(2);
            let anno = if s.backward {
                chart.draw_series(DashedLineSeries::new(s.points.iter().copied(), 8, 5, style))?
            } else {
                chart.draw_series(LineSeries::new(s.points.iter().copied(), style))?
            };
            let (colour, backward) = (s.colour, s.backward);
            anno.label(s.label).legend(move |(x, y)| {
                let style = colour.stroke_width(2);
                if backward {
                    PathElement::new(vec![(x, y), (x + 7, y)], style)
                } else {
                    PathElement::new(vec![(x, y), (x + 20, y)], style)
                }
            });
            chart.draw_series(s.points.iter().map(|&p| {
                if backward {
                    Circle::new(p, 3, colour.stroke_width(2))
                } else {
                    Circle::new(p, 3, colour.filled())
                }
            }))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()?;
    }
    root.present()?;
    Ok(())
}
