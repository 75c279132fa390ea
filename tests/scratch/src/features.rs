/// The columns `train` uses.
pub fn kept_features() -> Vec<usize> {
    vec![0, 1]
}
