//! Bakes an rpath to libtorch's `lib/` directory into every binary of the
//! package (the `pipeline` CLI, tests, benches), so they run without
//! `LD_LIBRARY_PATH`.
//!
//! `torch-sys` only adds a link *search* path; its rpath does not propagate to
//! downstream binaries. As a direct dependency of this package, `torch-sys`
//! (`links = "tch"`) hands us its library directory as `DEP_TCH_LIBTORCH_LIB`.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
