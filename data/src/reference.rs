//! Reference losses of dynamic batch loading (docs/algorithm.md §6.4): given numbers, the source model's own
//! eval losses, or a per-domain scaling law `L(N) = a / N^b + c` fitted to (parameter count,
//! loss) points and evaluated at the target's total parameter count.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// Total parameters of Llama-2 7B, 13B and 70B (docs/algorithm.md §6.4).
pub const LLAMA2_PARAMS: [f64; 3] = [6_738_415_616.0, 13_015_864_320.0, 68_976_648_192.0];

/// Per-domain validation losses of Llama-2 7B / 13B / 70B on RedPajama (docs/algorithm.md §6.4), in the
/// order of [`LLAMA2_PARAMS`].
pub const LLAMA2_LOSSES: [(&str, [f64; 3]); 7] = [
    ("cc", [1.7520, 1.6680, 1.4621]),
    ("github", [0.6216, 0.5791, 0.4890]),
    ("book", [1.9063, 1.8242, 1.6450]),
    ("stackexchange", [1.4482, 1.3936, 1.2805]),
    ("wiki", [1.4844, 1.3945, 1.2118]),
    ("arxiv", [1.2637, 1.2109, 1.1148]),
    ("c4", [1.9219, 1.8486, 1.6848]),
];

/// Where the reference losses come from. Read from a recipe or a checkpoint as a name (`source`,
/// `llama2`, see [`ReferenceLoss::parse`]) or a `values` / `scaling` table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", remote = "Self")]
pub enum ReferenceLoss {
    /// One number per domain.
    Values(BTreeMap<String, f64>),
    /// The source model's loss on each domain's eval split (computed by the training loop).
    #[default]
    Source,
    /// Per domain, (total parameters, loss) points to fit `L(N) = a / N^b + c` to.
    Scaling(BTreeMap<String, Vec<[f64; 2]>>),
}

impl Serialize for ReferenceLoss {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        ReferenceLoss::serialize(self, s)
    }
}

impl<'de> Deserialize<'de> for ReferenceLoss {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Name(String),
            Table(#[serde(with = "ReferenceLoss")] ReferenceLoss),
        }
        match Form::deserialize(d)? {
            Form::Name(n) => ReferenceLoss::parse(&n).map_err(serde::de::Error::custom),
            Form::Table(t) => Ok(t),
        }
    }
}

impl std::str::FromStr for ReferenceLoss {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        ReferenceLoss::parse(s)
    }
}

/// `source`, `llama2`, `name=loss,...`; a scaling law other than Llama-2's as its domains.
impl std::fmt::Display for ReferenceLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReferenceLoss::Source => f.write_str("source"),
            ReferenceLoss::Values(m) => {
                let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
                f.write_str(&parts.join(","))
            }
            s if *s == ReferenceLoss::llama2_scaling() => f.write_str("llama2"),
            ReferenceLoss::Scaling(m) => {
                let names: Vec<&str> = m.keys().map(String::as_str).collect();
                write!(f, "a scaling law for {}", names.join(", "))
            }
        }
    }
}

impl ReferenceLoss {
    /// `source`, `scaling` or `values`: the kind of reference, as reports name it.
    pub fn kind(&self) -> &'static str {
        match self {
            ReferenceLoss::Source => "source",
            ReferenceLoss::Scaling(_) => "scaling",
            ReferenceLoss::Values(_) => "values",
        }
    }

    /// Whether the losses come from a scaling law (no number per domain before the run).
    pub fn is_scaling(&self) -> bool {
        matches!(self, ReferenceLoss::Scaling(_))
    }

    /// The Llama-2 scaling points of docs/algorithm.md §6.4 (the paper's default reference).
    pub fn llama2_scaling() -> Self {
        ReferenceLoss::Scaling(
            LLAMA2_LOSSES
                .iter()
                .map(|(d, l)| {
                    let pts = LLAMA2_PARAMS.iter().zip(l).map(|(n, l)| [*n, *l]).collect();
                    (d.to_string(), pts)
                })
                .collect(),
        )
    }

    /// `source` | `llama2` (scaling with the Llama-2 points) | `cc=1.96,github=0.75,...` | a
    /// TOML file whose `[reference]` table (or the whole file) is `values = { cc = 1.96, ... }`
    /// or `scaling = { cc = [[6738415616, 1.752], [13015864320, 1.668], ...], ... }`.
    pub fn parse(s: &str) -> Result<Self> {
        if s.ends_with(".toml") {
            return Self::from_toml_file(std::path::Path::new(s));
        }
        match s.trim() {
            "source" => Ok(ReferenceLoss::Source),
            "llama2" | "llama2-scaling" => Ok(Self::llama2_scaling()),
            other if other.contains('=') => crate::proportions::parse_named_numbers(other)
                .map(ReferenceLoss::Values)
                .map_err(|e| DataError::Recipe(format!("reference losses: {e}"))),
            other => Err(DataError::Parse(format!(
                "unknown reference `{other}` (expected source, llama2, name=loss pairs or a .toml \
                 file)"
            ))),
        }
    }

    /// Reads a TOML file (see [`ReferenceLoss::parse`]).
    pub fn from_toml_file(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(DataError::io(path))?;
        let bad = |e: toml::de::Error| DataError::Invalid {
            path: path.to_path_buf(),
            msg: e.to_string().trim().replace('\n', " "),
        };
        let table: toml::Table = text.parse().map_err(bad)?;
        let table = match table.get("reference") {
            Some(toml::Value::Table(t)) => t.clone(),
            _ => table,
        };
        ReferenceLoss::deserialize(toml::Value::Table(table)).map_err(bad)
    }

    /// Losses for `domains` in order, for a target of `target_params` total parameters.
    /// `Source` cannot be resolved here (it needs the model): the caller evaluates it.
    pub fn resolve(&self, domains: &[String], target_params: f64) -> Result<Option<Vec<f64>>> {
        let lookup = |what: &str, has: &dyn Fn(&str) -> bool, keys: Vec<&String>| {
            for k in keys {
                if !domains.contains(k) {
                    return Err(DataError::Recipe(format!(
                        "reference {what} for domain `{k}`, which has no data (domains: {})",
                        domains.join(", ")
                    )));
                }
            }
            for d in domains {
                let alias = if d == "c4-rp" { "c4" } else { d.as_str() };
                if !has(d) && !has(alias) {
                    return Err(DataError::Recipe(format!(
                        "no reference {what} for domain `{d}`"
                    )));
                }
            }
            Ok(())
        };
        let pick = |d: &String| {
            if d == "c4-rp" {
                "c4".to_string()
            } else {
                d.clone()
            }
        };
        match self {
            ReferenceLoss::Source => Ok(None),
            ReferenceLoss::Values(m) => {
                lookup("loss", &|k| m.contains_key(k), m.keys().collect())?;
                Ok(Some(
                    domains
                        .iter()
                        .map(|d| {
                            m.get(d)
                                .or_else(|| m.get(&pick(d)))
                                .copied()
                                .expect("checked")
                        })
                        .collect(),
                ))
            }
            ReferenceLoss::Scaling(m) => {
                // Points for domains without data are ignored (the Llama-2 set names all seven
                // RedPajama domains; a run may use fewer).
                lookup("scaling points", &|k| m.contains_key(k), vec![])?;
                let sets: Vec<&[[f64; 2]]> = domains
                    .iter()
                    .map(|d| {
                        m.get(d)
                            .or_else(|| m.get(&pick(d)))
                            .expect("checked")
                            .as_slice()
                    })
                    .collect();
                let fits = fit_domains(domains, &sets)?;
                Ok(Some(fits.iter().map(|f| f.law.at(target_params)).collect()))
            }
        }
    }

    /// The scaling law of each of `domains` (docs/algorithm.md §6.4, with the checks and the
    /// shared-exponent fallback of [`fit_domains`]); `None` unless this is a scaling reference.
    pub fn scaling_fits(&self, domains: &[String]) -> Result<Option<Vec<DomainFit>>> {
        let ReferenceLoss::Scaling(m) = self else {
            return Ok(None);
        };
        self.resolve(domains, 1.0)?; // the same lookups and errors as `resolve`
        let sets: Vec<&[[f64; 2]]> = domains
            .iter()
            .map(|d| {
                let alias = if d == "c4-rp" { "c4" } else { d.as_str() };
                m.get(d)
                    .or_else(|| m.get(alias))
                    .expect("checked")
                    .as_slice()
            })
            .collect();
        fit_domains(domains, &sets).map(Some)
    }
}

/// The law fitted to one domain's points, and why it uses the shared exponent if it does.
#[derive(Clone, Debug, PartialEq)]
pub struct DomainFit {
    pub domain: String,
    pub law: ScalingLaw,
    /// `Some(reason)` when the domain's own fit failed [`ScalingLaw::check`] and the law uses
    /// the exponent fitted to all domains together (its own `a`, `c`).
    pub shared_exponent: Option<String>,
}

/// The exponents a fit may have: outside this range a law over a few points is extrapolating
/// noise (Llama-2's own domains fit at 0.028–0.05; Chinchilla's joint fit is about 0.34).
pub const ALPHA_RANGE: (f64, f64) = (0.01, 2.0);

/// Fits every domain's points on its own; a domain whose fit fails [`ScalingLaw::check`] gets
/// the exponent fitted jointly to all domains instead (docs/algorithm.md §6.4), and an error when
/// even that law fails the check.
pub fn fit_domains(domains: &[String], sets: &[&[[f64; 2]]]) -> Result<Vec<DomainFit>> {
    let bad = |d: &str, e: String| DataError::Recipe(format!("scaling points of `{d}`: {e}"));
    let mut out = Vec::with_capacity(domains.len());
    let mut shared: Option<Vec<ScalingLaw>> = None;
    for (i, (d, pts)) in domains.iter().zip(sets).enumerate() {
        let own = ScalingLaw::fit(pts).map_err(|e| bad(d, e))?;
        match own.check(pts) {
            Ok(()) => out.push(DomainFit {
                domain: d.clone(),
                law: own,
                shared_exponent: None,
            }),
            Err(why) => {
                if shared.is_none() {
                    shared = Some(ScalingLaw::fit_shared(sets).map_err(|e| bad(d, e))?);
                }
                let law = shared.as_ref().expect("just set")[i];
                if law.a <= 0.0 || law.check(pts).is_err() {
                    return Err(bad(
                        d,
                        format!("{why}, and with the shared exponent too (a = {:.4})", law.a),
                    ));
                }
                out.push(DomainFit {
                    domain: d.clone(),
                    law,
                    shared_exponent: Some(why),
                });
            }
        }
    }
    Ok(out)
}

/// `L(N) = a / N^b + c`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScalingLaw {
    pub a: f64,
    pub b: f64,
    pub c: f64,
}

impl ScalingLaw {
    pub fn at(&self, n: f64) -> f64 {
        self.a * n.powf(-self.b) + self.c
    }

    /// Least-squares fit to `[N, loss]` points (three or more; with three it interpolates
    /// them exactly, like the reference notebook's `curve_fit`). For a fixed `b` the best `a`, `c`
    /// are a linear least-squares solution, so only `b` is searched: a log-spaced scan of
    /// (1e-4, 4), then golden-section refinement around the best.
    pub fn fit(points: &[[f64; 2]]) -> std::result::Result<Self, String> {
        if points.len() < 3 {
            return Err(format!("{} points; the fit needs at least 3", points.len()));
        }
        if points
            .iter()
            .any(|p| p[0].is_nan() || p[0] <= 0.0 || !p[1].is_finite())
        {
            return Err("parameter counts must be positive and losses finite".into());
        }
        // Scale N so that N^-b stays well conditioned.
        let scale = points.iter().map(|p| p[0]).fold(0.0, f64::max);
        let b = argmin_log(1e-4f64.ln(), 4f64.ln(), &|b| {
            least_squares(points, scale, b).0
        });
        let (_, a, c) = least_squares(points, scale, b);
        // Undo the scaling of N: a (N/s)^-b = (a s^b) N^-b.
        Ok(ScalingLaw {
            a: a * scale.powf(b),
            b,
            c,
        })
    }

    /// What a usable law over `points` must satisfy: the losses fall as the size grows (the
    /// least-squares slope of loss on ln N is negative: measured losses carry noise, so one
    /// point a little above a smaller model's does not fail a domain), the amplitude `a` is
    /// positive and the exponent lies in [`ALPHA_RANGE`]. `Err` says which fails.
    pub fn check(&self, points: &[[f64; 2]]) -> std::result::Result<(), String> {
        let n = points.len() as f64;
        let (mx, my) = (
            points.iter().map(|p| p[0].ln()).sum::<f64>() / n,
            points.iter().map(|p| p[1]).sum::<f64>() / n,
        );
        let sxx: f64 = points.iter().map(|p| (p[0].ln() - mx).powi(2)).sum();
        let sxy: f64 = points.iter().map(|p| (p[0].ln() - mx) * (p[1] - my)).sum();
        let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
        if slope >= 0.0 {
            return Err(format!(
                "the loss does not fall with size (slope {slope:+.4} per e-fold of parameters)"
            ));
        }
        if self.a <= 0.0 {
            return Err(format!("amplitude a = {:.4} is not positive", self.a));
        }
        if !(ALPHA_RANGE.0..=ALPHA_RANGE.1).contains(&self.b) {
            return Err(format!(
                "exponent {:.4} is outside [{}, {}]",
                self.b, ALPHA_RANGE.0, ALPHA_RANGE.1
            ));
        }
        Ok(())
    }

    /// One exponent for every point set, each set with its own `a` and `c`: for a fixed
    /// exponent those are each set's linear least-squares solution, so only the exponent is
    /// searched (within [`ALPHA_RANGE`]) for the smallest residual summed over the sets.
    pub fn fit_shared(sets: &[&[[f64; 2]]]) -> std::result::Result<Vec<Self>, String> {
        if sets.iter().any(|s| s.len() < 2) {
            return Err("a shared-exponent fit needs at least 2 points per domain".into());
        }
        let scale = sets
            .iter()
            .flat_map(|s| s.iter().map(|p| p[0]))
            .fold(0.0, f64::max);
        let solve = |b: f64| -> (f64, Vec<(f64, f64)>) {
            let mut total = 0.0;
            let ac = sets
                .iter()
                .map(|pts| {
                    let (r, a, c) = least_squares(pts, scale, b);
                    total += r;
                    (a, c)
                })
                .collect();
            (total, ac)
        };
        let (lo, hi) = (ALPHA_RANGE.0.ln(), ALPHA_RANGE.1.ln());
        let b = argmin_log(lo, hi, &|b| solve(b).0);
        Ok(solve(b)
            .1
            .into_iter()
            .map(|(a, c)| ScalingLaw {
                a: a * scale.powf(b),
                b,
                c,
            })
            .collect())
    }
}

/// For `L = a x + c` with `x = (N / scale)^-b`: (residual sum of squares, a, c).
fn least_squares(points: &[[f64; 2]], scale: f64, b: f64) -> (f64, f64, f64) {
    let x: Vec<f64> = points.iter().map(|p| (p[0] / scale).powf(-b)).collect();
    let n = x.len() as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = points.iter().map(|p| p[1]).sum::<f64>() / n;
    let sxx: f64 = x.iter().map(|v| (v - mx) * (v - mx)).sum();
    let sxy: f64 = x
        .iter()
        .zip(points)
        .map(|(v, p)| (v - mx) * (p[1] - my))
        .sum();
    let a = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let c = my - a * mx;
    let r = x
        .iter()
        .zip(points)
        .map(|(v, p)| (a * v + c - p[1]).powi(2))
        .sum();
    (r, a, c)
}

/// The minimiser of `f` over `b` in `[e^lo, e^hi]`: a log-spaced scan, then golden-section
/// refinement around the best grid point.
fn argmin_log(lo: f64, hi: f64, f: &dyn Fn(f64) -> f64) -> f64 {
    let steps = 4000;
    let grid = |i: usize| (lo + (hi - lo) * i as f64 / steps as f64).exp();
    let best = (0..=steps)
        .min_by(|&i, &j| f(grid(i)).total_cmp(&f(grid(j))))
        .expect("non-empty grid");
    let (mut l, mut r) = (grid(best.saturating_sub(1)), grid((best + 1).min(steps)));
    let g = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..200 {
        let (m1, m2) = (r - g * (r - l), l + g * (r - l));
        if f(m1) < f(m2) {
            r = m2;
        } else {
            l = m1;
        }
    }
    (l + r) / 2.0
}
