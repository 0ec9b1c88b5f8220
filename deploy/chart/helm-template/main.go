// helm-template renders a Helm chart the way `helm template` does, for machines without a helm
// binary (none is packaged for Debian, and CI reaches only the package registries). It builds
// from Debian's Go packages alone (GO111MODULE=off, GOPATH=/usr/share/gocode).
//
// Supported: Go templates with sprig's functions plus Helm's include, tpl, required, toYaml,
// fromYaml, fromYamlArray; .Values (values.yaml deep-merged with -f files), .Release, .Chart,
// .Capabilities.KubeVersion, .Template. Not supported (and not used by our chart): lookup, .Files,
// subcharts, hooks. `deploy/render.sh` runs it; `deploy/check.sh` compares its output with the
// checked-in deploy/k8s manifests.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"sigs.k8s.io/yaml"
)

type valueFiles []string

func (v *valueFiles) String() string     { return strings.Join(*v, ",") }
func (v *valueFiles) Set(s string) error { *v = append(*v, s); return nil }

func main() {
	var files valueFiles
	name := flag.String("name", "recalloc", "release name")
	namespace := flag.String("namespace", "default", "release namespace")
	outDir := flag.String("output-dir", "", "write one file per template here (default: stdout)")
	kubeVersion := flag.String("kube-version", "v1.31.0", "Capabilities.KubeVersion.Version")
	showValues := flag.Bool("show-values", false, "print the merged values as JSON instead of rendering (for schema checks)")
	flag.Var(&files, "f", "values file merged over the chart's values.yaml (repeatable)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: helm-template [-f values.yaml]... [--name N] [--namespace NS] [--output-dir DIR] CHART_DIR")
		os.Exit(2)
	}
	if *showValues {
		values, err := mergedValues(flag.Arg(0), files)
		if err == nil {
			var out []byte
			if out, err = json.Marshal(values); err == nil {
				fmt.Println(string(out))
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "Error:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(flag.Arg(0), files, *name, *namespace, *kubeVersion, *outDir); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}

func readYAML(path string) (map[string]interface{}, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]interface{}{}
	if err := yaml.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

// merge copies over onto base the way Helm coalesces values: maps merge key by key, anything
// else replaces, and an explicit null deletes the key.
func merge(base, over map[string]interface{}) map[string]interface{} {
	for k, v := range over {
		if v == nil {
			delete(base, k)
			continue
		}
		if vm, ok := v.(map[string]interface{}); ok {
			if bm, ok := base[k].(map[string]interface{}); ok {
				base[k] = merge(bm, vm)
				continue
			}
		}
		base[k] = v
	}
	return base
}

// mergedValues is the chart's values.yaml with each file merged over it in order.
func mergedValues(chartDir string, files []string) (map[string]interface{}, error) {
	values, err := readYAML(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		over, err := readYAML(f)
		if err != nil {
			return nil, err
		}
		values = merge(values, over)
	}
	return values, nil
}

func run(chartDir string, files []string, name, namespace, kubeVersion, outDir string) error {
	chart, err := readYAML(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		return err
	}
	values, err := mergedValues(chartDir, files)
	if err != nil {
		return err
	}
	chartName, _ := chart["name"].(string)
	data := map[string]interface{}{
		"Values": values,
		"Release": map[string]interface{}{
			"Name": name, "Namespace": namespace, "Service": "Helm",
			"IsInstall": true, "IsUpgrade": false, "Revision": 1,
		},
		"Chart": map[string]interface{}{
			"Name": chartName, "Version": chart["version"], "AppVersion": chart["appVersion"],
		},
		"Capabilities": map[string]interface{}{
			"KubeVersion": map[string]interface{}{"Version": kubeVersion},
		},
	}

	paths, err := filepath.Glob(filepath.Join(chartDir, "templates", "*"))
	if err != nil {
		return err
	}
	sort.Strings(paths)
	root := template.New("chart").Option("missingkey=zero")
	funcs := sprig.TxtFuncMap()
	delete(funcs, "env")
	delete(funcs, "expandenv")
	funcs["include"] = func(name string, data interface{}) (string, error) {
		var buf bytes.Buffer
		err := root.ExecuteTemplate(&buf, name, data)
		return buf.String(), err
	}
	funcs["tpl"] = func(text string, data interface{}) (string, error) {
		t, err := root.Clone()
		if err != nil {
			return "", err
		}
		t, err = t.New("tpl").Parse(text)
		if err != nil {
			return "", err
		}
		var buf bytes.Buffer
		err = t.Execute(&buf, data)
		return buf.String(), err
	}
	funcs["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil || v == "" {
			return nil, errors.New(msg)
		}
		return v, nil
	}
	funcs["toYaml"] = func(v interface{}) string {
		out, err := yaml.Marshal(v)
		if err != nil {
			return ""
		}
		return strings.TrimSuffix(string(out), "\n")
	}
	funcs["fromYaml"] = func(s string) map[string]interface{} {
		out := map[string]interface{}{}
		if err := yaml.Unmarshal([]byte(s), &out); err != nil {
			out["Error"] = err.Error()
		}
		return out
	}
	funcs["fromYamlArray"] = func(s string) []interface{} {
		var out []interface{}
		if err := yaml.Unmarshal([]byte(s), &out); err != nil {
			return []interface{}{err.Error()}
		}
		return out
	}
	root.Funcs(funcs)

	var rendered []string
	for _, p := range paths {
		base := filepath.Base(p)
		if base == "NOTES.txt" || !(strings.HasSuffix(base, ".yaml") || strings.HasSuffix(base, ".tpl")) {
			continue
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		// Helm names each template by its path inside the chart.
		if _, err := root.New(chartName + "/templates/" + base).Parse(string(raw)); err != nil {
			return err
		}
		if !strings.HasPrefix(base, "_") {
			rendered = append(rendered, base)
		}
	}
	if outDir != "" {
		if err := os.MkdirAll(outDir, 0o755); err != nil {
			return err
		}
	}
	for _, base := range rendered {
		name := chartName + "/templates/" + base
		data["Template"] = map[string]interface{}{"Name": name, "BasePath": chartName + "/templates"}
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, name, data); err != nil {
			return err
		}
		body := strings.ReplaceAll(buf.String(), "<no value>", "")
		if strings.TrimSpace(body) == "" {
			continue // disabled by its values
		}
		source := fmt.Sprintf("# Source: %s/templates/%s\n", chartName, base)
		if outDir == "" {
			fmt.Printf("---\n%s%s\n", source, strings.TrimSpace(body))
			continue
		}
		doc := "---\n" + source + strings.TrimSpace(body) + "\n"
		if err := os.WriteFile(filepath.Join(outDir, base), []byte(doc), 0o644); err != nil {
			return err
		}
	}
	return nil
}
