//! No module of any crate in the workspace imports a module that imports it back.
//!
//! The graph is built from the source: each file module is a node, and each path it
//! uses (`use` items and paths in code, through `crate::`, `super::`, `self::` or a
//! child module's name) is an edge to the deepest file module the path names.
//! Declaring a child (`mod x;`) is not an edge; `#[cfg(test)]` items are left out,
//! since the rule is about the program's structure, not its test fixtures.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// A crate's file modules and the edges between them.
#[derive(Default)]
struct Graph {
    /// Module path (`edge::screen`) → its file.
    files: BTreeMap<Vec<String>, PathBuf>,
    edges: BTreeSet<(Vec<String>, Vec<String>)>,
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs
        .iter()
        .any(|a| a.path().is_ident("cfg") && a.meta.require_list().is_ok_and(|l| l.tokens.to_string().trim() == "test"))
}

/// Finds every file module reachable from `root` (lib.rs or main.rs).
fn discover(graph: &mut Graph, module: Vec<String>, file: &Path) {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    graph.files.insert(module.clone(), file.to_path_buf());
    // Children of `src/lib.rs` live in `src/`; children of `src/a.rs` in `src/a/`.
    let dir = match file.file_stem().and_then(|s| s.to_str()) {
        Some("lib" | "main" | "mod") => file.parent().map(Path::to_path_buf),
        Some(stem) => file.parent().map(|p| p.join(stem)),
        None => None,
    }
    .expect("a module file has a directory");
    for item in &ast.items {
        if let syn::Item::Mod(m) = item
            && m.content.is_none()
            && !is_cfg_test(&m.attrs)
        {
            let name = m.ident.to_string();
            let candidates = [dir.join(format!("{name}.rs")), dir.join(&name).join("mod.rs")];
            let child = candidates.iter().find(|p| p.exists()).unwrap_or_else(|| panic!("no file for mod {name}"));
            let mut path = module.clone();
            path.push(name);
            discover(graph, path, child);
        }
    }
}

/// Collects the module paths one file refers to.
struct Uses<'g> {
    graph: &'g Graph,
    /// The file's module path, plus any inline modules we are inside.
    here: Vec<String>,
    found: BTreeSet<Vec<String>>,
}

impl Uses<'_> {
    /// Resolves a path (its segments as written) to the deepest file module it names.
    fn resolve(&mut self, segments: &[String]) {
        let Some(first) = segments.first() else { return };
        let mut base: Vec<String> = match first.as_str() {
            "crate" => Vec::new(),
            "self" => self.here.clone(),
            "super" => {
                let mut b = self.here.clone();
                b.pop();
                b
            }
            _ => {
                // A bare path is relative to the current module when it starts with one
                // of its children (`use guard::x` inside `edge`).
                let mut child = self.here.clone();
                child.push(first.clone());
                if !self.graph.files.contains_key(&child) {
                    return;
                }
                self.here.clone()
            }
        };
        let rest = if matches!(first.as_str(), "crate" | "self" | "super") { &segments[1..] } else { segments };
        let mut rest = rest.iter().peekable();
        while rest.peek().is_some_and(|s| *s == "super") {
            base.pop();
            rest.next();
        }
        let mut deepest = base.clone();
        let mut current = base;
        for segment in rest {
            current.push(segment.clone());
            if self.graph.files.contains_key(&current) {
                deepest = current.clone();
            } else {
                break;
            }
        }
        self.found.insert(deepest);
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                prefix.push(n.ident.to_string());
                self.resolve(prefix);
                prefix.pop();
            }
            syn::UseTree::Rename(r) => {
                prefix.push(r.ident.to_string());
                self.resolve(prefix);
                prefix.pop();
            }
            syn::UseTree::Glob(_) => self.resolve(prefix),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Uses<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs = match item {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Use(u) => &u.attrs,
            syn::Item::Struct(s) => &s.attrs,
            syn::Item::Enum(e) => &e.attrs,
            syn::Item::Const(c) => &c.attrs,
            syn::Item::Static(s) => &s.attrs,
            syn::Item::Trait(t) => &t.attrs,
            _ => return syn::visit::visit_item(self, item),
        };
        if is_cfg_test(attrs) {
            return;
        }
        match item {
            syn::Item::Use(u) => self.use_tree(&mut Vec::new(), &u.tree),
            syn::Item::Mod(m) if m.content.is_some() => {
                self.here.push(m.ident.to_string());
                syn::visit::visit_item(self, item);
                self.here.pop();
            }
            _ => syn::visit::visit_item(self, item),
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none() && path.segments.len() > 1 {
            let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
            self.resolve(&segments);
        }
        syn::visit::visit_path(self, path);
    }
}

fn graph_of(src: &Path) -> Graph {
    let root = ["lib.rs", "main.rs"].iter().map(|f| src.join(f)).find(|p| p.exists()).expect("lib.rs or main.rs");
    let mut graph = Graph::default();
    discover(&mut graph, Vec::new(), &root);
    let mut edges = BTreeSet::new();
    for (module, file) in &graph.files {
        let text = std::fs::read_to_string(file).expect("readable");
        let ast = syn::parse_file(&text).expect("parsed above");
        let mut uses = Uses { graph: &graph, here: module.clone(), found: BTreeSet::new() };
        uses.visit_file(&ast);
        for target in uses.found {
            if &target != module && graph.files.contains_key(&target) {
                edges.insert((module.clone(), target));
            }
        }
    }
    graph.edges = edges;
    graph
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    let nodes: Vec<&Vec<String>> = graph.files.keys().collect();
    let index_of: BTreeMap<&Vec<String>, usize> = nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let mut adjacent = vec![Vec::new(); nodes.len()];
    for (from, to) in &graph.edges {
        adjacent[index_of[from]].push(index_of[to]);
    }
    struct Tarjan<'a> {
        adjacent: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.next);
            self.low[v] = self.next;
            self.next += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            for &w in &self.adjacent[v] {
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(i) if self.on_stack[w] => self.low[v] = self.low[v].min(i),
                    Some(_) => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.out.push(component);
                }
            }
        }
    }
    let n = nodes.len();
    let mut t = Tarjan {
        adjacent: &adjacent,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if t.index[v].is_none() {
            t.visit(v);
        }
    }
    let name = |v: usize| if nodes[v].is_empty() { "crate".to_owned() } else { nodes[v].join("::") };
    t.out.into_iter().map(|c| c.into_iter().map(name).collect()).collect()
}

fn workspace_crates() -> Vec<(String, PathBuf)> {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(&crates)
        .expect("crates/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").exists() && p.join("src").is_dir())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p.join("src")))
        .collect();
    out.sort();
    out
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let mut found = Vec::new();
    for (name, src) in workspace_crates() {
        for cycle in cycles(&graph_of(&src)) {
            found.push(format!("{name}: {}", cycle.join(" ↔ ")));
        }
    }
    assert!(found.is_empty(), "module cycles:\n{}", found.join("\n"));
}

#[test]
fn the_check_sees_a_cycle_when_there_is_one() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\nmod c;\n").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::b::B;\npub struct A;\n").unwrap();
    std::fs::write(src.join("b.rs"), "pub struct B;\nfn f() { let _ = super::c::C; }\n").unwrap();
    std::fs::write(src.join("c.rs"), "pub struct C(crate::a::A);\n#[cfg(test)]\nmod tests { use crate::a::A; }\n")
        .unwrap();
    let graph = graph_of(src);
    let found = cycles(&graph);
    assert_eq!(found.len(), 1, "{found:?}");
    let mut members = found[0].clone();
    members.sort();
    assert_eq!(members, ["a", "b", "c"]);
    // Without the back edge there is none; test-only edges never count.
    std::fs::write(src.join("c.rs"), "pub struct C;\n#[cfg(test)]\nmod tests { use crate::a::A; }\n").unwrap();
    assert!(cycles(&graph_of(src)).is_empty());
}
