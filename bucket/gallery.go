package bucket

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"html/template"
	"path"
	"strings"
	"time"
)

// timeZero: bucket files carry no modification time (Last-Modified is not
// sent; the CID ETag does the job).
var timeZero time.Time

// galleryScript marks the page once every image has loaded
// (data-images-loaded / data-images-total on <body>). The gallery needs no
// JavaScript; this lets a headless browser check it.
const galleryScript = `addEventListener("load",function(){var a=document.images,n=0;for(var i=0;i<a.length;i++){if(a[i].complete&&a[i].naturalWidth>0)n++}document.body.setAttribute("data-images-loaded",String(n));document.body.setAttribute("data-images-total",String(a.length))});`

var galleryScriptHash = func() string {
	h := sha256.Sum256([]byte(galleryScript))
	return base64.StdEncoding.EncodeToString(h[:])
}()

var imageExts = map[string]bool{".png": true, ".jpg": true, ".jpeg": true, ".gif": true, ".webp": true, ".avif": true, ".svg": false}

type galleryFile struct {
	Name string
	URL  string
	Size string
	Cid  string
}

type galleryGroup struct {
	Name     string
	URL      string
	Task     *ManifestTask
	Prompt   string
	Duration string
	Images   []galleryFile
	Files    []galleryFile
}

type galleryPage struct {
	Job      string
	Cid      string
	Path     string
	Manifest *Manifest
	Groups   []*galleryGroup
	Files    []galleryFile
	Script   template.JS
}

func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// buildGallery groups a listing by the first directory level below sub and
// joins each task directory with its manifest entry.
func buildGallery(l listing, sub []string) galleryPage {
	p := galleryPage{Job: l.Job, Cid: l.Cid, Path: l.Path, Manifest: l.Manifest}
	groups := map[string]*galleryGroup{}
	base := len(sub)
	for _, e := range l.Entries {
		parts := strings.Split(e.Path, "/")
		if len(parts) <= base {
			continue
		}
		rel := parts[base:]
		if len(rel) == 1 && e.Type == "file" {
			p.Files = append(p.Files, galleryFile{Name: e.Name, URL: e.URL, Size: humanSize(e.Size), Cid: e.Cid})
			continue
		}
		g := groups[rel[0]]
		if g == nil {
			g = &galleryGroup{Name: rel[0]}
			groups[rel[0]] = g
			p.Groups = append(p.Groups, g)
		}
		if len(rel) == 1 { // the group's directory itself
			g.URL = e.URL
			if base == 0 && l.Manifest != nil {
				for i := range l.Manifest.Tasks {
					t := &l.Manifest.Tasks[i]
					if t.CID == e.Cid || TaskDirName(t.Index) == e.Name {
						g.Task = t
						g.Prompt = t.Prompt()
						if t.DurationMs > 0 {
							g.Duration = (time.Duration(t.DurationMs) * time.Millisecond).String()
						}
						break
					}
				}
			}
			continue
		}
		if e.Type != "file" {
			continue
		}
		f := galleryFile{Name: strings.Join(rel[1:], "/"), URL: e.URL, Size: humanSize(e.Size), Cid: e.Cid}
		if imageExts[strings.ToLower(path.Ext(e.Name))] {
			g.Images = append(g.Images, f)
		} else {
			g.Files = append(g.Files, f)
		}
	}
	p.Script = template.JS(galleryScript)
	return p
}

var galleryTmpl = template.Must(template.New("gallery").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>swarmgen bucket {{.Job}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5rem;background:#fafafa;color:#222}
h1{font-size:1.3rem}code{font-size:.85em;word-break:break-all}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:1rem}
.task{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.8rem}
.task img{width:100%;height:auto;display:block;margin:.3rem 0;border-radius:4px;background:#eee}
.meta{font-size:.85rem;color:#555;margin:.2rem 0}.prompt{font-style:italic}
ul{padding-left:1.1rem;margin:.3rem 0}
</style></head>
<body>
<h1>Bucket for job <code>{{.Job}}</code></h1>
<p class="meta">root <code>{{.Cid}}</code> · path <code>{{.Path}}</code>{{with .Manifest}} · template <code>{{.Template}}</code> · {{len .Tasks}} tasks · created {{.CreatedAt.Format "2006-01-02 15:04:05 MST"}}{{end}}</p>
{{if .Files}}<ul>{{range .Files}}<li><a href="{{.URL}}">{{.Name}}</a> <span class="meta">{{.Size}}</span></li>{{end}}</ul>{{end}}
<div class="grid">
{{range .Groups}}<section class="task" id="{{.Name}}">
<h2 style="font-size:1rem;margin:0"><a href="{{.URL}}">{{.Name}}</a></h2>
{{with .Task}}<p class="meta">seed <b>{{.Seed}}</b> · attempt {{.Attempt}} · provider <code>{{.Provider}}</code></p>{{end}}
{{if .Duration}}<p class="meta">took {{.Duration}}</p>{{end}}
{{if .Prompt}}<p class="meta prompt">“{{.Prompt}}”</p>{{end}}
{{range .Images}}<figure style="margin:0"><a href="{{.URL}}"><img src="{{.URL}}" alt="{{.Name}}" loading="eager"></a>
<figcaption class="meta">{{.Name}} · {{.Size}}</figcaption></figure>{{end}}
{{if .Files}}<ul>{{range .Files}}<li><a href="{{.URL}}">{{.Name}}</a> <span class="meta">{{.Size}}</span></li>{{end}}</ul>{{end}}
</section>
{{end}}</div>
<script>{{.Script}}</script>
</body></html>
`))
