//! Build script: makes the CUDA kernels in `kernels/` available to the crate in two forms.
//!
//! 1. For NVRTC (real GPUs): every `kernels/*.cu` / `*.cuh` is embedded with `include_str!`, together with a
//!    table of the `extern "C" __global__` entry points and their parameter kinds, parsed from the source.
//!    The table lets both runtimes check a launch's argument list before it reaches the kernel.
//! 2. With the `emulation` feature: the same `.cu` files are compiled as C++ (g++ -O2) against
//!    `kernels/emu/cuda_emu.h`, the CPU shim of the CUDA execution model. For each entry point a wrapper
//!    `void emu_wrap_NAME(void** args)` unpacks a CUDA-style argument array and calls the kernel; a registry
//!    maps kernel names to wrappers (`emu_lookup`). `kernels/emu/tests.cu` holds emulation-only test kernels and
//!    `kernels/emu/planted.cu` the sanitizer's planted bugs. The kernels are instrumented (GCC's kernel-address
//!    sanitizer in callback mode) so that the shim's runtime sees every load and store: that is the emulator's
//!    sanitizer (memcheck, racecheck, initcheck, synccheck; see cuda_emu.cpp).
//!
//! The signature parser is deliberately small and strict: each parameter is one pointer, one scalar, or one of
//! the structs of PARAM_STRUCTS by value; anything else fails the build with a message naming the file and line.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let kdir = manifest.join("kernels");
    println!("cargo:rerun-if-changed={}", kdir.display());
    println!("cargo:rerun-if-changed={}", kdir.join("emu").display());

    let sources = list_sources(&kdir);
    let emu_only: Vec<PathBuf> = EMU_ONLY.iter().map(|f| kdir.join("emu").join(f)).collect();
    for p in sources.iter().chain(&emu_only) {
        println!("cargo:rerun-if-changed={}", p.display());
    }

    // Parse every kernel file (the emulation-only test kernels too: their launches are checked the same way).
    let mut modules: Vec<Module> = Vec::new();
    for path in &sources {
        if path.extension().is_some_and(|e| e == "cu") {
            modules.push(parse_module(path, false));
        }
    }
    let emulation = std::env::var_os("CARGO_FEATURE_EMULATION").is_some();
    if emulation {
        modules.extend(
            emu_only
                .iter()
                .filter(|p| p.exists())
                .map(|p| parse_module(p, true)),
        );
    }
    check_unique(&modules);

    write_table(&out, &sources, &modules);
    if emulation {
        build_emulation(&kdir, &out, &sources, &modules);
    }
    if std::env::var_os("CARGO_FEATURE_LIBTORCH").is_some() {
        libtorch_support(&manifest);
    }
}

/// The `libtorch` feature (benchmarks only). torch-sys finds libtorch (LIBTORCH, or the python of
/// LIBTORCH_USE_PYTORCH=1) and reports its library directory as DEP_TCH_LIBTORCH_LIB. With it:
/// - the directory becomes the binaries' rpath, so the benches start without LD_LIBRARY_PATH;
/// - libtorch_cuda is linked even though no symbol of it is referenced (the linker's --as-needed would drop it,
///   and libtorch then reports no CUDA device);
/// - benches/common/torch_shim.cpp (ATen ops tch does not bind) is compiled against libtorch's headers.
fn libtorch_support(manifest: &Path) {
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        fail("the libtorch feature needs torch-sys to report its library directory (DEP_TCH_LIBTORCH_LIB); \
              set LIBTORCH_USE_PYTORCH=1 with PyTorch 2.13.0's python first on PATH, or LIBTORCH=<dir>");
    };
    let lib = PathBuf::from(lib);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    let include = lib.parent().map(|p| p.join("include")).unwrap_or_default();
    let shim = manifest
        .join("benches")
        .join("common")
        .join("torch_shim.cpp");
    println!("cargo:rerun-if-changed={}", shim.display());
    // The C++ ABI must match libtorch's (PyTorch wheels use the C++11 ABI since 2.7); torch-sys reads the same
    // variable.
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .flag("-std=c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .include(&include)
        .file(&shim)
        .compile("gan_torch_shim");
}

/// `kernels/*.cu` and `kernels/*.cuh`, sorted (the emulation's own files live in `kernels/emu/`).
fn list_sources(kdir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(kdir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "cu" || e == "cuh"))
            .collect(),
        Err(e) => fail(&format!("cannot read {}: {e}", kdir.display())),
    };
    v.sort();
    v
}

/// Emulation-only kernel files in `kernels/emu/` (never compiled by NVRTC): tests of the shim, planted bugs.
const EMU_ONLY: &[&str] = &["tests.cu", "planted.cu"];

/// Name of the rewritten copy of a kernel file in OUT_DIR/emu_src (`emu/tests` -> `emu_tests.cu`).
fn emu_copy_name(stem: &str) -> String {
    format!("{}.cu", stem.replace('/', "_"))
}

fn fail(msg: &str) -> ! {
    // A panic message is what cargo shows for a failed build script; keep it one clear sentence.
    panic!("\n\nkernel build error: {msg}\n\n");
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Ptr,
    I32,
    U32,
    F32,
    U64,
    /// A struct passed by value (one of PARAM_STRUCTS); its name is the param's `cxx_type` without `const`.
    Struct,
}

/// Structs a kernel may take by value. Each has a `#[repr(C)]` twin on the Rust side, and both sides assert its
/// size (the launch copies the Rust value's bytes into the kernel's parameter space).
const PARAM_STRUCTS: &[&str] = &["TensorList"];

struct Param {
    kind: Kind,
    /// The C++ type the wrapper casts the argument slot to, e.g. `const float*` or `int`.
    cxx_type: String,
}

struct Kernel {
    name: String,
    params: Vec<Param>,
}

struct Module {
    /// File stem, e.g. `activation` (or `emu/tests`).
    stem: String,
    path: PathBuf,
    kernels: Vec<Kernel>,
    emu_only: bool,
}

/// Replaces comments by spaces (newlines kept) so line numbers still match the original text.
fn strip_comments(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && i + 1 < b.len() && b[i + 1] == b'/' {
            while i < b.len() && b[i] != b'\n' {
                out.push(b' ');
                i += 1;
            }
        } else if b[i] == b'/' && i + 1 < b.len() && b[i + 1] == b'*' {
            out.extend_from_slice(b"  ");
            i += 2;
            while i < b.len() && !(b[i] == b'*' && i + 1 < b.len() && b[i + 1] == b'/') {
                out.push(if b[i] == b'\n' { b'\n' } else { b' ' });
                i += 1;
            }
            out.extend_from_slice(b"  ");
            i += 2;
        } else if b[i] == b'"' {
            // String literals are kept verbatim (extern "C" needs its "C").
            out.push(b[i]);
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    out.push(b[i]);
                    i += 1;
                }
                out.push(b[i]);
                i += 1;
            }
            if i < b.len() {
                out.push(b[i]);
                i += 1;
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out.truncate(b.len());
    String::from_utf8(out).expect("kernel sources must be UTF-8")
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Punct(char),
}

/// Tokens with their byte offsets (numbers come out as identifiers, which is all the parser needs).
fn tokenize(s: &str) -> Vec<(usize, Tok)> {
    let b = s.as_bytes();
    let mut v = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_alphanumeric() || c == b'_' {
            let st = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                i += 1;
            }
            v.push((st, Tok::Ident(s[st..i].to_string())));
        } else if c == b'"' {
            let st = i;
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            v.push((st, Tok::Str(s[st + 1..(i - 1).min(s.len())].to_string())));
        } else {
            v.push((i, Tok::Punct(c as char)));
            i += 1;
        }
    }
    v
}

fn line_of(src: &str, off: usize) -> usize {
    src[..off.min(src.len())].matches('\n').count() + 1
}

fn parse_module(path: &Path, emu_only: bool) -> Module {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", path.display())));
    let clean = strip_comments(&text);
    let toks = tokenize(&clean);
    let file_stem = path.file_stem().unwrap().to_string_lossy();
    let stem = if emu_only {
        format!("emu/{file_stem}")
    } else {
        file_stem.into_owned()
    };
    let at = |off: usize| format!("{}:{}", path.display(), line_of(&clean, off));
    let mut kernels = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let is_extern_c = toks[i].1 == Tok::Ident("extern".into())
            && toks.get(i + 1).map(|t| &t.1) == Some(&Tok::Str("C".into()));
        if !is_extern_c {
            i += 1;
            continue;
        }
        let start = toks[i].0;
        i += 2;
        if toks.get(i).map(|t| &t.1) == Some(&Tok::Punct('{')) {
            fail(&format!(
                "{}: `extern \"C\" {{ ... }}` blocks are not supported; write `extern \"C\" __global__ void name(...)` per kernel",
                at(start)
            ));
        }
        // Declaration specifiers up to the parameter list.
        let (mut global, mut void, mut name) = (false, false, None::<String>);
        loop {
            match toks.get(i).map(|t| &t.1) {
                Some(Tok::Ident(id)) if id == "__launch_bounds__" => {
                    i += 1;
                    i = skip_parens(&toks, i).unwrap_or_else(|| {
                        fail(&format!("{}: unbalanced __launch_bounds__(...)", at(start)))
                    });
                }
                Some(Tok::Ident(id)) if id == "__global__" => {
                    global = true;
                    i += 1;
                }
                Some(Tok::Ident(id)) if id == "void" => {
                    void = true;
                    i += 1;
                }
                Some(Tok::Ident(id)) => {
                    if name.is_some() {
                        fail(&format!(
                            "{}: unexpected `{id}` in a kernel declaration",
                            at(start)
                        ));
                    }
                    name = Some(id.clone());
                    i += 1;
                }
                Some(Tok::Punct('(')) => break,
                _ => fail(&format!(
                    "{}: cannot parse this extern \"C\" declaration (expected `extern \"C\" __global__ void name(...)`)",
                    at(start)
                )),
            }
        }
        let name = name.unwrap_or_else(|| fail(&format!("{}: kernel without a name", at(start))));
        if !global || !void {
            fail(&format!(
                "{}: extern \"C\" `{name}` must be `__global__ void` (only kernels may be extern \"C\")",
                at(start)
            ));
        }
        let open = i;
        let close = skip_parens(&toks, open).unwrap_or_else(|| {
            fail(&format!(
                "{}: unbalanced parameter list of {name}",
                at(start)
            ))
        }) - 1;
        let inner = &toks[open + 1..close];
        let params = parse_params(inner, &name, &at(start));
        // A prototype followed later by the definition is fine; keep one entry.
        if let Some(prev) = kernels.iter().find(|k: &&Kernel| k.name == name) {
            let same = prev.params.len() == params.len()
                && prev
                    .params
                    .iter()
                    .zip(&params)
                    .all(|(a, b)| a.kind == b.kind);
            if !same {
                fail(&format!(
                    "{}: `{name}` declared twice with different parameters",
                    at(start)
                ));
            }
        } else {
            kernels.push(Kernel { name, params });
        }
        i = close + 1;
    }
    Module {
        stem,
        path: path.to_path_buf(),
        kernels,
        emu_only,
    }
}

/// Index just past the parenthesis group starting at `i` (which must be `(`).
fn skip_parens(toks: &[(usize, Tok)], i: usize) -> Option<usize> {
    if toks.get(i).map(|t| &t.1) != Some(&Tok::Punct('(')) {
        return None;
    }
    let mut depth = 0usize;
    let mut j = i;
    while j < toks.len() {
        match toks[j].1 {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => {
                depth -= 1;
                if depth == 0 {
                    return Some(j + 1);
                }
            }
            _ => {}
        }
        j += 1;
    }
    None
}

fn parse_params(toks: &[(usize, Tok)], kernel: &str, at: &str) -> Vec<Param> {
    if toks.is_empty() || (toks.len() == 1 && toks[0].1 == Tok::Ident("void".into())) {
        return Vec::new();
    }
    let mut params = Vec::new();
    for group in toks.split(|t| t.1 == Tok::Punct(',')) {
        let text: Vec<String> = group
            .iter()
            .map(|t| match &t.1 {
                Tok::Ident(s) => s.clone(),
                Tok::Str(s) => format!("\"{s}\""),
                Tok::Punct(c) => c.to_string(),
            })
            .collect();
        let shown = text.join(" ");
        let bad = |why: &str| -> ! {
            fail(&format!(
                "{at}: kernel {kernel}: cannot use parameter `{shown}` ({why}); allowed: float*, const float*, int*, unsigned int*, unsigned long long*, __half*, __nv_bfloat16*, float4*, int, unsigned int, float, unsigned long long, and by value {}", PARAM_STRUCTS.join(", ")
            ))
        };
        let mut pointee_const = false;
        let mut stars = 0;
        let mut words: Vec<&str> = Vec::new();
        for w in &text {
            match w.as_str() {
                "const" => {
                    if stars == 0 {
                        pointee_const = true;
                    }
                }
                "__restrict__" | "__restrict" => {}
                "*" => stars += 1,
                "&" | "[" | "]" | "<" | ">" | "=" => {
                    bad("references, arrays, templates and defaults are not supported")
                }
                _ => words.push(w.as_str()),
            }
        }
        if words.len() < 2 {
            bad("expected a type and a name");
        }
        let pname = words.pop().unwrap();
        if !pname.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bad("bad parameter name");
        }
        let base = words.join(" ");
        let base = match base.as_str() {
            "unsigned" => "unsigned int".to_string(),
            _ => base,
        };
        let kind = match (stars, base.as_str()) {
            (
                1,
                "float" | "int" | "unsigned int" | "unsigned long long" | "__half"
                | "__nv_bfloat16" | "float4" | "float2" | "int4",
            ) => Kind::Ptr,
            (0, "float") => Kind::F32,
            (0, "int") => Kind::I32,
            (0, "unsigned int") => Kind::U32,
            (0, "unsigned long long") => Kind::U64,
            (0, name) if PARAM_STRUCTS.contains(&name) => Kind::Struct,
            _ => bad("unsupported type"),
        };
        let cxx_type = format!(
            "{}{}{}",
            if pointee_const { "const " } else { "" },
            base,
            "*".repeat(stars)
        );
        params.push(Param { kind, cxx_type });
    }
    params
}

fn check_unique(modules: &[Module]) {
    let mut seen: std::collections::HashMap<&str, &str> = Default::default();
    for m in modules {
        for k in &m.kernels {
            if let Some(prev) = seen.insert(&k.name, &m.stem) {
                fail(&format!(
                    "kernel `{}` is defined in both {prev}.cu and {}.cu (names must be unique)",
                    k.name, m.stem
                ));
            }
        }
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Ptr => "Ptr",
        Kind::I32 => "I32",
        Kind::U32 => "U32",
        Kind::F32 => "F32",
        Kind::U64 => "U64",
        Kind::Struct => "Struct",
    }
}

/// OUT_DIR/kernel_table.rs: the kernel signatures and the embedded sources (included by src/cuda/runtime.rs).
fn write_table(out: &Path, sources: &[PathBuf], modules: &[Module]) {
    let mut s = String::from("// @generated by build.rs from kernels/*.cu\n");
    s.push_str("static KERNELS: &[KernelSig] = &[\n");
    for m in modules {
        for k in &m.kernels {
            let args: Vec<String> = k
                .params
                .iter()
                .map(|p| match p.kind {
                    Kind::Struct => format!(
                        "ArgKind::Struct({:?})",
                        p.cxx_type.trim_start_matches("const ")
                    ),
                    k => format!("ArgKind::{}", kind_name(k)),
                })
                .collect();
            writeln!(
                s,
                "    KernelSig {{ name: {:?}, module: {:?}, args: &[{}], emu_only: {} }},",
                k.name,
                m.stem,
                args.join(", "),
                m.emu_only
            )
            .unwrap();
        }
    }
    s.push_str("];\n\nstatic KERNEL_SOURCES: &[(&str, &str)] = &[\n");
    for p in sources {
        writeln!(
            s,
            "    ({:?}, include_str!({:?})),",
            p.file_name().unwrap().to_string_lossy(),
            p.display().to_string()
        )
        .unwrap();
    }
    s.push_str("];\n");
    write_if_changed(&out.join("kernel_table.rs"), &s);
}

fn write_if_changed(path: &Path, text: &str) {
    if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
        std::fs::write(path, text)
            .unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", path.display())));
    }
}

/// Rewrites `extern __shared__ [__align__(N)] T name[];` (dynamic shared memory) into a pointer to the
/// emulation's per-block buffer, and each static `__shared__ T name[..];` (a per-OS-thread static under the
/// header's macro) into that static under another name plus a reference `name` to it that registers it with the
/// runtime (poisoned per block, known to the checks by name and extent). Only the line's text changes, so line
/// numbers stay those of the original file.
fn rewrite_for_emulation(path: &Path, text: &str) -> String {
    let clean = strip_comments(text);
    let toks = tokenize(&clean);
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    let mut depth = 0i32;
    let mut i = 0;
    while i < toks.len() {
        match &toks[i].1 {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => depth -= 1,
            Tok::Ident(id)
                if id == "extern"
                    && toks.get(i + 1).map(|t| &t.1) == Some(&Tok::Ident("__shared__".into())) =>
            {
                let start = toks[i].0;
                let at = format!("{}:{}", path.display(), line_of(&clean, start));
                if depth <= 0 {
                    fail(&format!(
                        "{at}: declare `extern __shared__` inside the kernel (function scope), not at file scope"
                    ));
                }
                let mut j = i + 2;
                // The emulation's buffer is 256-byte aligned, which covers any __align__(N).
                if toks.get(j).map(|t| &t.1) == Some(&Tok::Ident("__align__".into())) {
                    j = skip_parens(&toks, j + 1)
                        .unwrap_or_else(|| fail(&format!("{at}: bad __align__")));
                }
                let mut words = Vec::new();
                while let Some(Tok::Ident(w)) = toks.get(j).map(|t| &t.1) {
                    words.push(w.clone());
                    j += 1;
                }
                let shape_ok = toks.get(j).map(|t| &t.1) == Some(&Tok::Punct('['))
                    && toks.get(j + 1).map(|t| &t.1) == Some(&Tok::Punct(']'))
                    && toks.get(j + 2).map(|t| &t.1) == Some(&Tok::Punct(';'));
                if words.len() < 2 || !shape_ok {
                    fail(&format!(
                        "{at}: expected `extern __shared__ TYPE name[];` for dynamic shared memory"
                    ));
                }
                let name = words.pop().unwrap();
                let ty = words.join(" ");
                let end = toks[j + 2].0 + 1;
                edits.push((
                    start,
                    end,
                    format!("{ty}* const {name} = reinterpret_cast<{ty}*>(emu_dynamic_smem(\"{name}\"));"),
                ));
                i = j + 3;
                continue;
            }
            Tok::Ident(id) if id == "__shared__" => {
                let (name_at, name, end) = static_shared_decl(&toks, i, depth, &clean, path);
                edits.push((name_at, name_at + name.len(), format!("{name}__emu")));
                edits.push((
                    end,
                    end,
                    format!(" auto& {name} = *emu_shared_static(&{name}__emu, \"{name}\");"),
                ));
                i += 1;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    let mut outs = text.to_string();
    for (s, e, r) in edits.into_iter().rev() {
        // The replaced span is one declaration; keep any newlines it spanned so line numbers hold.
        let nl = text[s..e].matches('\n').count();
        outs.replace_range(s..e, &format!("{r}{}", "\n".repeat(nl)));
    }
    outs
}

/// The static `__shared__` declaration whose keyword is token `i`: (offset of its name, the name, offset just
/// past its `;`). One declarator, no initialiser, inside a function.
fn static_shared_decl(
    toks: &[(usize, Tok)],
    i: usize,
    depth: i32,
    clean: &str,
    path: &Path,
) -> (usize, String, usize) {
    let at = format!("{}:{}", path.display(), line_of(clean, toks[i].0));
    if depth <= 0 {
        fail(&format!(
            "{at}: declare `__shared__` variables inside the kernel or device function, not at file scope"
        ));
    }
    let mut name: Option<(usize, String)> = None;
    let mut last_ident: Option<(usize, String)> = None;
    let mut nest = 0i32;
    for (off, t) in &toks[i + 1..] {
        match t {
            Tok::Punct('(') => nest += 1,
            Tok::Punct(')') => nest -= 1,
            Tok::Punct('[') if nest == 0 => {
                if name.is_none() {
                    name = last_ident.clone();
                }
                nest += 1;
            }
            Tok::Punct('[') => nest += 1,
            Tok::Punct(']') => nest -= 1,
            Tok::Punct(',' | '=' | '{') if nest == 0 => fail(&format!(
                "{at}: one `__shared__` variable per declaration, without an initialiser"
            )),
            Tok::Punct(';') => {
                let (name_at, name) = name.or(last_ident).unwrap_or_else(|| {
                    fail(&format!(
                        "{at}: cannot find the name of this `__shared__` variable"
                    ))
                });
                return (name_at, name, off + 1);
            }
            Tok::Ident(id) if nest == 0 => last_ident = Some((*off, id.clone())),
            _ => {}
        }
    }
    fail(&format!("{at}: `__shared__` declaration without a `;`"))
}

fn build_emulation(kdir: &Path, out: &Path, sources: &[PathBuf], modules: &[Module]) {
    let emu_dir = kdir.join("emu");
    let header = emu_dir.join("cuda_emu.h");
    let runtime = emu_dir.join("cuda_emu.cpp");
    for p in [&header, &runtime] {
        println!("cargo:rerun-if-changed={}", p.display());
        if !p.exists() {
            fail(&format!(
                "{} is missing (needed by the `emulation` feature)",
                p.display()
            ));
        }
    }
    let gen = out.join("emu_src");
    std::fs::create_dir_all(&gen).unwrap();

    // Rewritten copies of every kernel file and header, each starting with a #line so that compiler errors
    // point at the original source.
    let copy = |path: &Path, name: &str| {
        let text = std::fs::read_to_string(path).unwrap();
        let body = rewrite_for_emulation(path, &text);
        let t = format!("#line 1 \"{}\"\n{}", path.display(), body);
        write_if_changed(&gen.join(name), &t);
    };
    for p in sources {
        copy(p, &p.file_name().unwrap().to_string_lossy());
    }
    for m in modules.iter().filter(|m| m.emu_only) {
        copy(&m.path, &emu_copy_name(&m.stem));
    }

    let mut base = cc::Build::new();
    base.cpp(true)
        .opt_level(2)
        .debug(false)
        .warnings(false)
        .flag("-std=c++17")
        .flag("-include")
        .flag(header.to_str().unwrap())
        .include(&gen)
        .include(kdir)
        .include(&emu_dir);
    // GAN_EMU_UCONTEXT=1 selects the portable ucontext fiber switch on x86-64 too (to test that path).
    println!("cargo:rerun-if-env-changed=GAN_EMU_UCONTEXT");
    if std::env::var("GAN_EMU_UCONTEXT").is_ok_and(|v| v == "1") {
        base.define("EMU_USE_UCONTEXT", None);
    }
    // The kernels are instrumented: every load and store calls the runtime's __asan_* callbacks (not inline
    // shadow checks: call threshold 0), locals and globals get no redzones, and no loop is vectorised (a vector
    // load of 4 floats would look like a misaligned 16-byte access). -fsanitize=alignment reports a pointer to
    // a vector type that is not aligned for it, even where the compiler splits the access into scalars. The
    // runtime itself is not instrumented.
    let mut build = base.clone();
    let compiler = build.get_compiler();
    if compiler.is_like_gnu() && !compiler.is_like_clang() {
        for f in [
            "-fsanitize=kernel-address",
            "--param=asan-instrumentation-with-call-threshold=0",
            "--param=asan-stack=0",
            "--param=asan-globals=0",
            "--param=asan-use-after-return=0",
            "-fno-tree-vectorize",
            "-fsanitize=alignment",
            "-fsanitize-recover=alignment",
        ] {
            build.flag(f);
        }
    } else {
        println!(
            "cargo:warning=the emulator's sanitizer needs GCC; with this C++ compiler kernel memory accesses are \
             not checked"
        );
    }

    let mut registry = String::from("// @generated by build.rs\n#include <cstring>\n");
    for m in modules {
        let file = if m.emu_only {
            emu_copy_name(&m.stem)
        } else {
            m.path.file_name().unwrap().to_string_lossy().into_owned()
        };
        let ident = m.stem.replace('/', "_");
        let mut w = format!("// @generated by build.rs: launch wrappers for {file}\n#include \"{file}\"\n\nnamespace {{\n");
        for k in &m.kernels {
            let args: Vec<String> = k
                .params
                .iter()
                .enumerate()
                .map(|(i, p)| format!("*reinterpret_cast<{}*>(a[{i}])", p.cxx_type))
                .collect();
            writeln!(
                w,
                "void emu_wrap_{}(void** a) {{ (void)a; {}({}); }}",
                k.name,
                k.name,
                args.join(", ")
            )
            .unwrap();
        }
        w.push_str("}\n\n");
        writeln!(
            w,
            "extern \"C\" const EmuKernelEntry emu_kernels_{ident}[] = {{"
        )
        .unwrap();
        for k in &m.kernels {
            writeln!(w, "    {{\"{0}\", emu_wrap_{0}}},", k.name).unwrap();
        }
        w.push_str("    {nullptr, nullptr},\n};\n");
        let wrap_path = gen.join(format!("wrap_{ident}.cpp"));
        write_if_changed(&wrap_path, &w);
        build.file(&wrap_path);
        writeln!(
            registry,
            "extern \"C\" const EmuKernelEntry emu_kernels_{ident}[];"
        )
        .unwrap();
    }
    registry.push_str("static const EmuKernelEntry* const EMU_MODULES[] = {\n");
    for m in modules {
        writeln!(registry, "    emu_kernels_{},", m.stem.replace('/', "_")).unwrap();
    }
    registry.push_str("    nullptr,\n};\n\n");
    registry.push_str(
        "/// Wrapper of the kernel `name`, or null.\nextern \"C\" EmuWrapper emu_lookup(const char* name) {\n    for (int m = 0; EMU_MODULES[m]; ++m)\n        for (const EmuKernelEntry* e = EMU_MODULES[m]; e->name; ++e)\n            if (std::strcmp(e->name, name) == 0) return e->fn;\n    return nullptr;\n}\n",
    );
    let reg_path = gen.join("registry.cpp");
    write_if_changed(&reg_path, &registry);
    build.file(&reg_path);
    // Kernels first: they call into the runtime, and the linker resolves static libraries in order.
    build.compile("gan_emu");
    base.file(&runtime).compile("gan_emu_rt");
}
