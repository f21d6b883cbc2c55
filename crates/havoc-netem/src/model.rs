//! The random model of the delay engine, a faithful port of Linux netem's decisions.
//!
//! - Correlation is netem's `get_crandom`: `next = ((2^32 - ρ)·rand + ρ·last) >> 32` with ρ the
//!   percentage scaled to 2^32, so 0 % is independent draws and 100 % repeats the last value.
//! - Delay without a distribution table is netem's default: uniform in
//!   `[delay - jitter, delay + jitter)` (clamped at 0), drawn from the correlated generator.
//! - Reordering follows netem_enqueue: while fewer than `gap - 1` packets were delayed since the
//!   last reordered one, a packet is always delayed; after that, each packet is sent at once
//!   (reordered) with probability `percent` (correlated). `gap = 1` gives plain probability.
//!
//! The generator is ChaCha8 seeded by the caller, so a run is reproducible packet by packet.

use std::time::Duration;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One correlated uniform `u32` stream (netem's `struct crndstate`).
#[derive(Debug, Clone)]
struct Correlated {
    rho: u64,
    last: u64,
}

impl Correlated {
    fn new(percent: f64) -> Self {
        Self {
            rho: percent_to_u32(percent) as u64,
            last: 0,
        }
    }

    fn next(&mut self, rng: &mut ChaCha8Rng) -> u32 {
        let value = rng.next_u32() as u64;
        if self.rho == 0 {
            return value as u32;
        }
        let rho = self.rho + 1;
        let v = (value * ((1u64 << 32) - rho) + self.last * rho) >> 32;
        self.last = v;
        v as u32
    }
}

/// A percentage 0..=100 scaled to the full `u32` range, as netem's `get_percent` does.
fn percent_to_u32(percent: f64) -> u32 {
    let p = percent.clamp(0.0, 100.0) / 100.0;
    (p * u32::MAX as f64).round() as u32
}

/// What the engine does with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Hold it this long (may be zero).
    Delay(Duration),
    /// Send it at once, ahead of delayed packets.
    Reorder,
}

/// The per-queue decision state.
#[derive(Debug, Clone)]
pub(crate) struct Model {
    rng: ChaCha8Rng,
    delay_ns: u64,
    jitter_ns: u64,
    delay_cor: Correlated,
    reorder: Option<(u32, u32, Correlated)>, // (threshold, gap, state)
    counter: u32,
}

impl Model {
    pub(crate) fn new(
        seed: u64,
        delay: Duration,
        jitter: Duration,
        correlation: f64,
        reorder: Option<(f64, f64, u32)>,
    ) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            delay_ns: delay.as_nanos() as u64,
            jitter_ns: jitter.as_nanos() as u64,
            delay_cor: Correlated::new(correlation),
            reorder: reorder
                .map(|(pct, cor, gap)| (percent_to_u32(pct), gap.max(1), Correlated::new(cor))),
            counter: 0,
        }
    }

    pub(crate) fn decide(&mut self) -> Decision {
        if let Some((threshold, gap, cor)) = &mut self.reorder {
            let reorder = self.counter >= *gap - 1 && *threshold >= cor.next(&mut self.rng);
            if reorder && *threshold > 0 {
                self.counter = 0;
                return Decision::Reorder;
            }
            self.counter = self.counter.saturating_add(1);
        }
        Decision::Delay(Duration::from_nanos(self.sample_delay_ns()))
    }

    fn sample_delay_ns(&mut self) -> u64 {
        if self.jitter_ns == 0 {
            return self.delay_ns;
        }
        let rnd = self.delay_cor.next(&mut self.rng) as u128;
        let span = 2 * self.jitter_ns as u128;
        let offset = ((rnd * span) >> 32) as u64;
        (self.delay_ns + offset).saturating_sub(self.jitter_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1e3
    }

    #[test]
    fn uniform_jitter_stays_in_range_with_the_right_mean() {
        let mut m = Model::new(
            7,
            Duration::from_millis(100),
            Duration::from_millis(10),
            0.0,
            None,
        );
        let n = 100_000;
        let mut sum = 0.0;
        for _ in 0..n {
            let Decision::Delay(d) = m.decide() else {
                panic!("reordered without reorder")
            };
            assert!((90.0..110.0).contains(&ms(d)), "{d:?} out of range");
            sum += ms(d);
        }
        assert!(
            (sum / n as f64 - 100.0).abs() < 0.1,
            "mean {}",
            sum / n as f64
        );
    }

    #[test]
    fn correlation_makes_successive_delays_close() {
        let diff = |cor: f64| {
            let mut m = Model::new(
                1,
                Duration::from_millis(100),
                Duration::from_millis(10),
                cor,
                None,
            );
            let mut last = 100.0;
            let mut total = 0.0;
            for _ in 0..10_000 {
                let Decision::Delay(d) = m.decide() else {
                    unreachable!()
                };
                total += (ms(d) - last).abs();
                last = ms(d);
            }
            total / 10_000.0
        };
        assert!(diff(90.0) < diff(0.0) / 3.0);
    }

    #[test]
    fn reorder_rate_and_gap_follow_netem() {
        let reorder_fraction = |pct: f64, gap: u32| {
            let mut m = Model::new(
                3,
                Duration::from_millis(10),
                Duration::ZERO,
                0.0,
                Some((pct, 0.0, gap)),
            );
            let n = 100_000;
            (0..n).filter(|_| m.decide() == Decision::Reorder).count() as f64 / n as f64
        };
        assert!((reorder_fraction(25.0, 1) - 0.25).abs() < 0.01);
        assert_eq!(reorder_fraction(0.0, 1), 0.0);
        assert_eq!(
            reorder_fraction(100.0, 5),
            0.2,
            "100 % with gap 5 = exactly every 5th"
        );
    }

    #[test]
    fn same_seed_same_decisions() {
        let run = |seed| {
            let mut m = Model::new(
                seed,
                Duration::from_millis(50),
                Duration::from_millis(20),
                25.0,
                Some((10.0, 0.0, 1)),
            );
            (0..1000).map(|_| m.decide()).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }
}
