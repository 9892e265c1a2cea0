fn main() -> std::process::ExitCode {
    gan_engine::cli::main()
}
