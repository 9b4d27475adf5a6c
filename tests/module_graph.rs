//! The crate's modules depend on each other without cycles (the guide's "no cycles between
//! modules"): each top-level module of `src/` (a file, or a folder with its submodules) may
//! name `crate::other` only if `other` does not, directly or through others, name it back.
//! Names re-exported at the crate root (`crate::Error`) count for their module, and groups
//! (`crate::{a, B}`) for each name. Test modules (`mod tests { .. }`, `tests.rs`) and `//`
//! comments are left out: a test may drive two modules together.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Top-level module name -> the modules its code names as `crate::name`, directly or through
/// a name the crate root re-exports (`crate::Error` is `error`'s).
type Graph = BTreeMap<String, BTreeSet<String>>;

/// The names `lib.rs` re-exports (`pub use module::{A, B};`), each with its module.
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for line in lib.lines().filter_map(|line| line.trim().strip_prefix("pub use ")) {
        let Some((module, items)) = line.trim_end_matches(';').split_once("::") else { continue };
        for item in items.trim_matches(|c| c == '{' || c == '}').split(',') {
            let item = item.trim();
            if !item.is_empty() {
                names.insert(item.to_owned(), module.to_owned());
            }
        }
    }
    names
}

/// Every name a source text reaches through `crate::`: `crate::name` and each name of a
/// `crate::{a, b::c, D}` group (which may span lines), comments left out.
fn crate_names(text: &str) -> Vec<String> {
    let code: String = text
        .lines()
        .take_while(|line| !line.trim_start().starts_with("mod tests {")) // the unit tests
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut names = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let item = item.trim();
                names.push(item.chars().take_while(|&c| is_name(c)).collect());
            }
        } else {
            names.push(rest.chars().take_while(|&c| is_name(c)).collect());
        }
    }
    names.retain(|name: &String| !name.is_empty());
    names
}

/// The source files of `dir` and its folders, tests left out.
fn sources(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).expect("a readable folder") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs")
            && path.file_stem().is_some_and(|stem| stem != "tests")
        {
            files.push(path);
        }
    }
}

fn module_graph(src: &Path) -> Graph {
    let lib = fs::read_to_string(src.join("lib.rs")).expect("src/lib.rs");
    let reexported = reexports(&lib);
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut graph = Graph::new();
    for path in files {
        let relative = path.strip_prefix(src).expect("under src/");
        let first = relative.components().next().expect("a file under src/");
        let module = Path::new(first.as_os_str()).file_stem().and_then(|stem| stem.to_str()).expect("UTF-8").to_owned();
        if module == "lib" {
            continue;
        }
        let text = fs::read_to_string(&path).expect("readable source file");
        let uses = graph.entry(module.clone()).or_default();
        for name in crate_names(&text) {
            // A re-exported item stands for its module; other names are modules.
            let target = reexported.get(&name).cloned().unwrap_or(name);
            if target != module && target.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                uses.insert(target);
            }
        }
    }
    graph
}

/// A cycle through `start`, if there is one: `start`, the modules on the way, `start`.
fn cycle_through(graph: &Graph, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![start.to_owned()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().expect("paths are never empty");
        for next in graph.get(last).into_iter().flatten() {
            let mut longer = path.clone();
            longer.push(next.clone());
            if next == start {
                return Some(longer);
            }
            if seen.insert(next.clone()) {
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn the_modules_of_src_depend_on_each_other_without_cycles() {
    let graph = module_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(graph.len() > 20, "found only {} modules: is src/ where it was?", graph.len());
    assert!(graph["engine"].contains("table"), "the scan misses uses: engine names crate::table");
    assert!(
        graph["builder"].contains("download"),
        "the scan misses re-exports: builder names crate::DownloadBuffer in a group"
    );
    assert!(graph["slots"].contains("counter"), "the scan misses submodules: slots/generation.rs names crate::counter");
    let cycles: Vec<String> =
        graph.keys().filter_map(|module| cycle_through(&graph, module)).map(|c| c.join(" -> ")).collect();
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
}

#[test]
fn a_cycle_is_found() {
    let mut graph = Graph::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    graph.entry("c".into()).or_default().insert("a".into());
    assert_eq!(cycle_through(&graph, "a"), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
    graph.get_mut("c").unwrap().clear();
    assert_eq!(cycle_through(&graph, "a"), None);
}
