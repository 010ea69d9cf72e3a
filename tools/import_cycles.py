#!/usr/bin/env python3
"""File-level import circles in the library: which source files call into each other in a loop.

    python3 tools/import_cycles.py BUILD_DIR

Reads the library's object files (BUILD_DIR/CMakeFiles/advtrain_obj.dir/src/**.o) with nm: the
functions and data each file defines, and the ones it uses. File A depends on file B when A uses
a symbol B defines. A circle is a strongly connected component of that graph with more than one
file (A calls B and B, directly or through others, calls A): the kind of knot issue 25 removed
between the attack helpers and the attacks, and between the dataset dispatcher and the loaders.
Calls through function pointers (the layer and attack tables) are not calls here: a table entry
refers to its file's functions, and the driver reaches them only through the table. Prints each
circle and exits 1 if there is one, else prints the number of files and dependencies and exits 0.
Includes are not counted separately: a header included without a call to its file is no
dependency, and every call through a header shows up as a used symbol."""
import pathlib
import subprocess
import sys


def symbols(obj):
    """(defined, used) global symbol names of one object file."""
    out = subprocess.run(["nm", "-g", str(obj)], check=True, capture_output=True, text=True).stdout
    defined, used = set(), set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "U":
            used.add(parts[1])
        elif len(parts) == 3 and parts[1] in "TDBRCVW":
            defined.add(parts[2])
    return defined, used


def strongly_connected(graph):
    """Tarjan's algorithm, iterative: the components of a {node: set(nodes)} graph."""
    index, low, on_stack, stack, comps, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                comps.append(sorted(comp))
    return comps


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    root = pathlib.Path(sys.argv[1]) / "CMakeFiles" / "advtrain_obj.dir" / "src"
    objs = sorted(root.rglob("*.o"))
    if not objs:
        sys.exit(f"import_cycles: no object files under {root}: build the library first")
    files = {str(o.relative_to(root))[: -len(".o")]: symbols(o) for o in objs}
    owner = {}
    for name, (defined, _) in files.items():
        for sym in defined:
            owner[sym] = name
    graph = {name: {owner[s] for s in used if s in owner and owner[s] != name}
             for name, (_, used) in files.items()}
    circles = [c for c in strongly_connected(graph) if len(c) > 1]
    for c in circles:
        print("import circle: " + " <-> ".join("src/" + f for f in c))
        for a in c:
            for b in sorted(graph[a] & set(c)):
                why = sorted(s for s in files[a][1] if owner.get(s) == b)
                print(f"  src/{a} uses src/{b}: {', '.join(why[:6])}{' ...' if len(why) > 6 else ''}")
    if circles:
        sys.exit(1)
    edges = sum(len(v) for v in graph.values())
    print(f"import_cycles: {len(files)} files, {edges} file dependencies, no circle")


if __name__ == "__main__":
    main()
