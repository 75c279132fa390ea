//! W5: a one-step pipeline as a whole process (`one_step run`).
fn main() -> std::process::ExitCode {
    zenflow::cli::main(benches::one_step)
}
