//! The crate's modules depend on each other without cycles (the guide's "no cycles between
//! modules"): each top-level module of `src/` (a file, or a folder with its submodules) may
//! name `crate::other` only if `other` does not, directly or through others, name it back.
//! Test modules (`mod tests { .. }`, `tests.rs`) and comments are left out: a test may
//! drive two modules together.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Top-level module name -> the modules its code names as `crate::name`.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn module_graph(src: &Path) -> Graph {
    let mut graph = Graph::new();
    let mut add_file = |module: &str, path: &Path| {
        let text = fs::read_to_string(path).expect("readable source file");
        let uses = graph.entry(module.to_owned()).or_default();
        for line in text.lines() {
            let code = line.trim_start();
            if code.starts_with("mod tests {") {
                break; // the rest of the file is its unit tests
            }
            let code = code.split("//").next().unwrap_or("");
            for (at, _) in code.match_indices("crate::") {
                let name: String =
                    code[at + "crate::".len()..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                if !name.is_empty() && name != module {
                    uses.insert(name);
                }
            }
        }
    };
    for entry in fs::read_dir(src).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        let name = path.file_stem().and_then(|stem| stem.to_str()).expect("a UTF-8 file name").to_owned();
        if path.is_dir() {
            for file in fs::read_dir(&path).expect("a readable module folder") {
                let file = file.expect("a directory entry").path();
                let is_tests = file.file_stem().is_some_and(|stem| stem == "tests");
                if file.extension().is_some_and(|ext| ext == "rs") && !is_tests {
                    add_file(&name, &file);
                }
            }
        } else if path.extension().is_some_and(|ext| ext == "rs") && name != "lib" {
            add_file(&name, &path);
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
