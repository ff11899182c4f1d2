//! Turning the model's output row into probabilities and a ranked top-k.

use serde::Serialize;

/// One class with its score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// Class index.
    pub index: usize,
    /// Class label.
    pub label: String,
    /// Probability in 0..=1.
    pub score: f32,
}

/// Numerically stable softmax, in place.
pub fn softmax_in_place(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += f64::from(*v);
    }
    let inv = (1.0 / sum) as f32;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// The `k` highest scores, best first; ties go to the lower index. NaN ranks last.
pub fn top_k(scores: &[f32], labels: &[String], k: usize) -> Vec<Prediction> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    let key = |i: &usize| {
        let s = scores[*i];
        if s.is_nan() { f32::NEG_INFINITY } else { s }
    };
    let k = k.min(scores.len());
    let cmp = |a: &usize, b: &usize| key(b).total_cmp(&key(a)).then(a.cmp(b));
    if k > 0 && k < idx.len() {
        idx.select_nth_unstable_by(k - 1, cmp);
        idx.truncate(k);
    }
    idx.sort_by(cmp);
    idx.truncate(k);
    idx.into_iter()
        .map(|i| Prediction {
            index: i,
            label: labels.get(i).cloned().unwrap_or_else(|| i.to_string()),
            score: scores[i],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let mut v = vec![1000.0, 999.5, 995.0, 990.0];
        softmax_in_place(&mut v);
        assert!((v.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(v[0] > v[1] && v[1] > v[2] && v[2] > v[3]);
    }

    #[test]
    fn top_k_ranks_and_breaks_ties_by_index() {
        let labels: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let t = top_k(&[0.1, 0.4, 0.4, f32::NAN], &labels, 3);
        let got: Vec<usize> = t.iter().map(|p| p.index).collect();
        assert_eq!(got, [1, 2, 0]);
        assert_eq!(t[0].label, "b");
        assert_eq!(top_k(&[0.1, 0.2], &labels, 10).len(), 2);
        assert!(top_k(&[0.1, 0.2], &labels, 0).is_empty());
    }
}
