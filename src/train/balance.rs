//! Who is winning the game, for the progress line: D(x) against D(G(z)), smoothed over steps.
//!
//! At the equilibrium of the BCE losses D outputs 1/2 on real and generated images alike, so the gap between
//! the mean D(x) and the mean D(G(z)) (before the D step) says how well D separates them: near 1 D wins (G's
//! gradients vanish under the minimax loss and G stops learning), near 0 the game is balanced, below 0 D rates
//! G's images above real ones. Single steps are noisy, so the gap is an exponential moving average.

/// Smoothed D(x) − D(G(z)) of the probabilities a BCE loss reports.
#[derive(Clone, Debug, Default)]
pub struct Balance {
    gap: Option<f64>,
}

/// Weight of the past in the moving average: about the last 20 logged steps count.
const WEIGHT: f64 = 0.95;

impl Balance {
    /// Adds one step's mean D(x) and mean D(G(z)) (before the D update); returns the verdict.
    pub fn update(&mut self, d_x: f32, d_g_z: f32) -> &'static str {
        let g = (d_x - d_g_z) as f64;
        if g.is_finite() {
            self.gap = Some(self.gap.map_or(g, |s| WEIGHT * s + (1.0 - WEIGHT) * g));
        }
        self.verdict()
    }

    pub fn verdict(&self) -> &'static str {
        match self.gap {
            None => "balance unknown",
            Some(g) if g >= 0.6 => "D winning",
            Some(g) if g >= 0.3 => "D ahead",
            Some(g) if g >= -0.1 => "balanced",
            Some(_) => "G ahead",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_the_smoothed_gap() {
        let mut b = Balance::default();
        assert_eq!(b.verdict(), "balance unknown");
        // The first step sets the average; D(x) 0.97 vs D(G(z)) 0.02 is D winning.
        assert_eq!(b.update(0.97, 0.02), "D winning");
        assert_eq!(Balance::default().update(0.7, 0.35), "D ahead");
        assert_eq!(Balance::default().update(0.52, 0.48), "balanced");
        assert_eq!(Balance::default().update(0.3, 0.6), "G ahead");
        // One balanced step does not flip a D-dominated run; many do.
        let mut b = Balance::default();
        b.update(0.97, 0.02);
        assert_eq!(b.update(0.5, 0.5), "D winning");
        for _ in 0..100 {
            b.update(0.5, 0.5);
        }
        assert_eq!(b.verdict(), "balanced");
        // A NaN step (a diverged batch) leaves the average as it was.
        assert_eq!(b.update(f32::NAN, 0.5), "balanced");
    }
}
