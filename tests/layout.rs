//! The shape of the code, held: no module imports one that imports it back, no
//! function in `src/` runs over 80 lines, the README's layout table names every file
//! of `src/`, and its shader table names every entry point.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use cvae::gpu::kernels::{naga_module, SHADER_FILES};

const MAX_FN_LINES: usize = 80;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `src/`, relative to the project root.
fn sources() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut v = Vec::new();
    walk(&root().join("src"), &mut v);
    v.sort();
    v.into_iter().map(|p| p.strip_prefix(root()).unwrap().to_path_buf()).collect()
}

/// The module a library file defines: `src/gpu/mod.rs` -> `gpu`, `src/gpu/ops.rs` ->
/// `gpu::ops`, `src/lib.rs` -> ``; None for the binary's `main.rs`.
fn module_of(file: &Path) -> Option<String> {
    let rel = file.strip_prefix("src").ok()?;
    let mut parts: Vec<String> = rel.iter().map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string()).collect();
    match parts.last().map(String::as_str) {
        Some("main") if parts.len() == 1 => return None,
        Some("lib") if parts.len() == 1 => parts.clear(),
        Some("mod") => {
            parts.pop();
        }
        _ => {}
    }
    Some(parts.join("::"))
}

/// Code without `//` comments, so paths named in prose are not imports.
fn code_lines(text: &str) -> Vec<String> {
    text.lines().map(|l| l.split("//").next().unwrap_or("").to_string()).collect()
}

/// The longest prefix of `path` (segments) that is a module.
fn resolve(modules: &BTreeSet<String>, path: &[&str]) -> Option<String> {
    (0..=path.len()).rev().map(|n| path[..n].join("::")).find(|m| modules.contains(m))
}

/// Module -> the modules it refers to through `crate::`, `super::` or, in a
/// `mod.rs`, its children's names.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let files: Vec<(PathBuf, String)> = sources().into_iter().filter_map(|f| module_of(&f).map(|m| (f, m))).collect();
    let modules: BTreeSet<String> = files.iter().map(|(_, m)| m.clone()).collect();
    let mut graph = BTreeMap::new();
    for (file, module) in &files {
        let is_dir_module = file.ends_with("mod.rs") || file.ends_with("lib.rs");
        let parent: Vec<&str> = if is_dir_module {
            module.split("::").filter(|s| !s.is_empty()).collect()
        } else {
            let v: Vec<&str> = module.split("::").collect();
            v[..v.len() - 1].to_vec()
        };
        let mut edges = BTreeSet::new();
        for line in code_lines(&std::fs::read_to_string(root().join(file)).unwrap()) {
            let tokens: Vec<&str> = line.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).collect();
            for t in tokens {
                let segs: Vec<&str> = t.split("::").filter(|s| !s.is_empty()).collect();
                let target = match segs.first() {
                    Some(&"crate") => resolve(&modules, &segs[1..]),
                    Some(&"super") => {
                        let mut p = parent.clone();
                        p.extend(&segs[1..]);
                        resolve(&modules, &p)
                    }
                    // `use child::Item;` inside a mod.rs.
                    Some(first) if is_dir_module && segs.len() > 1 => {
                        let mut p = parent.clone();
                        p.push(first);
                        let child = p.join("::");
                        modules.contains(&child).then_some(child)
                    }
                    _ => None,
                };
                if let Some(t) = target.filter(|t| t != module && !t.is_empty()) {
                    edges.insert(t);
                }
            }
        }
        graph.insert(module.clone(), edges);
    }
    graph
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let graph = import_graph();
    assert!(graph.get("checkpoint").is_some_and(|e| e.contains("config")), "the import scan found nothing: {graph:?}");
    // Depth-first search for a back edge; report the cycle.
    fn visit(
        m: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(m.to_string(), 1);
        stack.push(m.to_string());
        for n in g.get(m).into_iter().flatten() {
            match state.get(n.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = stack.iter().position(|s| s == n).unwrap();
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(n.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(n, g, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in graph.keys() {
        if state.get(m).copied().unwrap_or(0) == 0 {
            if let Some(cycle) = visit(m, &graph, &mut state, &mut Vec::new()) {
                panic!("import cycle: {}", cycle.join(" -> "));
            }
        }
    }
}

#[test]
fn no_function_in_src_is_longer_than_80_lines() {
    let mut long = Vec::new();
    for file in sources() {
        let text = std::fs::read_to_string(root().join(&file)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let t = l.trim_start();
            let is_fn = ["fn ", "pub fn ", "pub(crate) fn "].iter().any(|p| t.starts_with(p)) && !t.ends_with(';');
            if !is_fn {
                continue;
            }
            // rustfmt closes a function at its own indentation.
            let close = format!("{}}}", &l[..l.len() - t.len()]);
            if let Some(end) = lines[i + 1..].iter().position(|x| *x == close) {
                if end + 2 > MAX_FN_LINES {
                    long.push(format!("{}:{} {} lines", file.display(), i + 1, end + 2));
                }
            }
        }
    }
    assert!(long.is_empty(), "functions over {MAX_FN_LINES} lines: {long:?}");
}

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).unwrap()
}

/// The README section from `heading` to the next heading of the same level.
fn section(text: &str, heading: &str) -> String {
    let start = text.find(heading).unwrap_or_else(|| panic!("README has no {heading:?}"));
    let rest = &text[start + heading.len()..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    rest[..end].to_string()
}

#[test]
fn the_readme_layout_table_names_every_source_file() {
    let layout = section(&readme(), "## Layout");
    let missing: Vec<String> = sources().iter().map(|f| f.display().to_string()).filter(|f| !layout.contains(&format!("`{f}`"))).collect();
    assert!(missing.is_empty(), "README's layout table lacks {missing:?}");
}

#[test]
fn the_readme_shader_table_names_every_entry_point_and_file() {
    let shaders = section(&readme(), "## Shaders");
    let mut missing = Vec::new();
    for (file, _) in SHADER_FILES {
        if !shaders.contains(&format!("`{file}.wgsl`")) {
            missing.push(format!("{file}.wgsl"));
        }
        let (module, _) = naga_module(file).unwrap();
        for ep in &module.entry_points {
            if !shaders.contains(&format!("`{}`", ep.name)) {
                missing.push(ep.name.clone());
            }
        }
    }
    for lib in ["prelude", "rng"] {
        if !shaders.contains(&format!("`{lib}.wgsl`")) {
            missing.push(format!("{lib}.wgsl"));
        }
    }
    assert!(missing.is_empty(), "README's shader table lacks {missing:?}");
}
