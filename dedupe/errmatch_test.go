package dedupe_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"testing"
)

// TestNoErrorMatchingByText keeps this package (tests included) matching
// errors with errors.Is / errors.As / redis.HasErrorPrefix: it fails on any
// comparison of, or strings-package call on, the result of an Error() call.
func TestNoErrorMatchingByText(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.BinaryExpr:
				if (n.Op == token.EQL || n.Op == token.NEQ) && (isErrorCall(n.X) || isErrorCall(n.Y)) {
					t.Errorf("%s: error matched by its text", fset.Position(n.Pos()))
				}
			case *ast.CallExpr:
				sel, ok := n.Fun.(*ast.SelectorExpr)
				if !ok {
					break
				}
				if pkg, ok := sel.X.(*ast.Ident); ok && pkg.Name == "strings" {
					for _, arg := range n.Args {
						if isErrorCall(arg) {
							t.Errorf("%s: error matched by its text with strings.%s", fset.Position(n.Pos()), sel.Sel.Name)
						}
					}
				}
			}
			return true
		})
	}
}

func isErrorCall(e ast.Expr) bool {
	call, ok := e.(*ast.CallExpr)
	if !ok || len(call.Args) != 0 {
		return false
	}
	sel, ok := call.Fun.(*ast.SelectorExpr)
	return ok && sel.Sel.Name == "Error"
}
