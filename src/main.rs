fn main() {
    println!("gan-engine: being written");
}
