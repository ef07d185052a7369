pub async fn run(_listen: &str, _agents: usize, _rate: f64, _data_dir: Option<std::path::PathBuf>) -> i32 {
    0
}
