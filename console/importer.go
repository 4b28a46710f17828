package console

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/maskpbx/maskpbx/storage"
)

// Import limits.
const (
	maxUpload     = 5 << 20
	maxImportRows = 10000
	// importKeep is how long a finished import's report stays viewable.
	importKeep = time.Hour
)

// ImportReports keeps CSV import reports where every node can show them:
// an import runs on the node its file was posted to, and its page may be
// asked of any other. Save replaces the report under id; Load returns
// ErrNoImport for one it does not have.
type ImportReports interface {
	Save(ctx context.Context, id string, report []byte) error
	Load(ctx context.Context, id string) ([]byte, error)
}

// ErrNoImport is what ImportReports.Load says of an unknown import.
var ErrNoImport = errors.New("console: no such import")

// importJobs are the CSV imports of this node, running or finished, and,
// through shared (nil: this node's memory only), those of the others.
type importJobs struct {
	mu     sync.Mutex
	jobs   map[string]*importJob
	shared ImportReports
	logger *zap.Logger
}

func newImportJobs(shared ImportReports, logger *zap.Logger) *importJobs {
	return &importJobs{jobs: map[string]*importJob{}, shared: shared, logger: logger}
}

func (j *importJobs) add(job *importJob) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for id, old := range j.jobs {
		if p := old.progress(); p.Finished && time.Since(old.finishedAt()) > importKeep {
			delete(j.jobs, id)
		}
	}
	j.jobs[job.ID] = job
}

// importIDPattern is what an import id looks like (newToken's alphabet);
// anything else is not looked up.
var importIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{22}$`)

// get finds an import: this node's own, else another node's report.
func (j *importJobs) get(ctx context.Context, id string) (*importJob, bool) {
	j.mu.Lock()
	job, ok := j.jobs[id]
	j.mu.Unlock()
	if ok || j.shared == nil || !importIDPattern.MatchString(id) {
		return job, ok
	}
	raw, err := j.shared.Load(ctx, id)
	if err != nil {
		if !errors.Is(err, ErrNoImport) {
			j.logger.Warn("console: import report not read", zap.String("job", id), zap.Error(err))
		}
		return nil, false
	}
	var rec importRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		j.logger.Warn("console: import report unreadable", zap.String("job", id), zap.Error(err))
		return nil, false
	}
	rec.Progress.Errors, rec.Progress.Created = rec.Errors, rec.Created
	return &importJob{ID: id, FileName: rec.FileName, StartedAt: rec.StartedAt, p: rec.Progress, finished: rec.FinishedAt}, true
}

// save shares job's report as it stands: while it runs only its counters
// (what the progress poll shows), once finished its rows too.
func (j *importJobs) save(ctx context.Context, job *importJob) {
	if j.shared == nil {
		return
	}
	p := job.progress()
	rec := importRecord{FileName: job.FileName, StartedAt: job.StartedAt, FinishedAt: job.finishedAt(), Progress: p}
	if p.Finished {
		rec.Errors, rec.Created = p.Errors, p.Created
	}
	raw, err := json.Marshal(rec)
	if err == nil {
		err = j.shared.Save(ctx, job.ID, raw)
	}
	if err != nil {
		j.logger.Warn("console: import report not shared", zap.String("job", job.ID), zap.Error(err))
	}
}

// importRecord is an import's report as it is shared.
type importRecord struct {
	FileName   string         `json:"file_name"`
	StartedAt  time.Time      `json:"started_at"`
	FinishedAt time.Time      `json:"finished_at,omitzero"`
	Progress   importProgress `json:"progress"`
	Errors     []rowError     `json:"errors,omitempty"`
	Created    []createdAt    `json:"created,omitempty"`
}

// importShareEvery is how often a running import's counters are shared.
const importShareEvery = time.Second

// importJob is one CSV import. Its goroutine owns the counters; readers
// take a copy through progress.
type importJob struct {
	ID, FileName string
	StartedAt    time.Time

	mu       sync.Mutex
	p        importProgress
	finished time.Time
}

type importProgress struct {
	Total    int         `json:"total"`
	Done     int         `json:"done"`
	Imported int         `json:"imported"`
	Failed   int         `json:"failed"`
	Finished bool        `json:"finished"`
	Fatal    string      `json:"fatal,omitempty"`
	Errors   []rowError  `json:"-"`
	Created  []createdAt `json:"-"`
}

// rowError is why one row was not imported. It names the row and the
// client's name, never the number in it.
type rowError struct {
	Line    int
	Name    string
	Message string
}

type createdAt struct {
	Line             int
	ID, Code, Name   string
	ManagerName      string
	PartnerNames     string
	SegmentOrNothing string
}

func (j *importJob) progress() importProgress {
	j.mu.Lock()
	defer j.mu.Unlock()
	p := j.p
	p.Errors = append([]rowError(nil), j.p.Errors...)
	p.Created = append([]createdAt(nil), j.p.Created...)
	return p
}

func (j *importJob) finishedAt() time.Time {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.finished
}

func (j *importJob) update(fn func(p *importProgress)) {
	j.mu.Lock()
	defer j.mu.Unlock()
	fn(&j.p)
	if j.p.Finished && j.finished.IsZero() {
		j.finished = time.Now()
	}
}

// importRow is one parsed row of the file.
type importRow struct {
	Line                   int
	Name, Segment, Manager string
	Phones, Partners       []string
}

type importView struct {
	Error string
	Job   *importJob
	P     importProgress
}

func (c *Console) importPage(w http.ResponseWriter, r *http.Request, s *session) error {
	return c.render(w, r, s, "import", c.localeFor(r, s).t("import.title"), "clients", importView{})
}

// startImport reads an uploaded CSV, checks its header and starts a job
// that creates the clients one by one through the API, under the admin's
// session. The answer is the job's page, which shows progress.
func (c *Console) startImport(w http.ResponseWriter, r *http.Request, s *session) error {
	lc := c.localeFor(r, s)
	fail := func(id string, args ...any) error {
		return c.renderStatus(w, r, s, http.StatusBadRequest, "import", lc.t("import.title"), "clients", importView{Error: lc.t(id, args...)})
	}
	file, hdr, err := r.FormFile("file")
	if err != nil {
		return fail("import.choose_file")
	}
	defer file.Close()
	raw, err := io.ReadAll(io.LimitReader(file, maxUpload+1))
	if err != nil {
		return err
	}
	if len(raw) > maxUpload {
		return fail("import.too_large", "MiB", maxUpload>>20)
	}
	rows, err := parseImport(raw)
	var pe *pageError
	if errors.As(err, &pe) {
		return fail(pe.ID, pe.Args...)
	}
	if err != nil {
		return err
	}
	ppl, err := c.people(r.Context())
	if err != nil {
		return err
	}
	job := &importJob{ID: newToken()[:22], FileName: hdr.Filename, StartedAt: time.Now()}
	job.p.Total = len(rows)
	c.imports.add(job)
	c.imports.save(r.Context(), job)
	caller := c.apiFor(r, s)
	// The import outlives this request; it stops if it runs unreasonably long.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 30*time.Minute)
	go func() {
		defer cancel()
		c.runImport(ctx, lc, job, caller, rows, ppl, s.principal().Actor())
	}()
	c.logger.Info("console: import started", zap.String("job", job.ID), zap.Int("rows", len(rows)))
	http.Redirect(w, r, "/console/imports/"+job.ID, http.StatusSeeOther)
	return nil
}

// importColumns are the header names a CSV may use, by field.
var importColumns = map[string][]string{
	"name":     {"name", "client", "client_name"},
	"phones":   {"phone", "phones", "number", "numbers"},
	"segment":  {"segment"},
	"manager":  {"manager", "manager_username", "sip_username"},
	"partners": {"partners", "partner_usernames"},
}

// parseImport reads the whole file: a header row naming the columns (name,
// phone, manager required; segment, partners optional; any order, any case),
// then one client a row. Several phones or partners in a cell are separated
// by ';' or '|'.
func parseImport(raw []byte) ([]importRow, error) {
	if !utf8.Valid(raw) {
		return nil, importProblem("import.not_utf8")
	}
	text := strings.TrimPrefix(string(raw), "\ufeff")
	sep := ','
	if first, _, _ := strings.Cut(text, "\n"); strings.Count(first, ";") > strings.Count(first, ",") {
		sep = ';' // spreadsheets in many locales write ';'
	}
	cr := csv.NewReader(strings.NewReader(text))
	cr.Comma, cr.FieldsPerRecord, cr.TrimLeadingSpace = sep, -1, true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, importProblem("import.empty")
	}
	if err != nil {
		return nil, importProblem("import.bad_header")
	}
	col := map[string]int{}
	for i, h := range header {
		h = strings.ToLower(strings.TrimSpace(h))
		for field, names := range importColumns {
			for _, n := range names {
				if h == n {
					if _, dup := col[field]; !dup {
						col[field] = i
					}
				}
			}
		}
	}
	var missing []string
	for _, f := range []string{"name", "phones", "manager"} {
		if _, ok := col[f]; !ok {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		return nil, importProblem("import.missing_columns", "Missing", strings.Join(missing, ", "))
	}
	cell := func(rec []string, field string) string {
		i, ok := col[field]
		if !ok || i >= len(rec) {
			return ""
		}
		return strings.TrimSpace(rec[i])
	}
	var rows []importRow
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return nil, importProblem("import.bad_line", "Line", pe.Line, "Error", pe.Err.Error())
			}
			return nil, importProblem("import.bad_csv")
		}
		line, _ := cr.FieldPos(0)
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue // blank line
		}
		if len(rows) == maxImportRows {
			return nil, importProblem("import.too_many_rows", "Max", maxImportRows)
		}
		rows = append(rows, importRow{Line: line, Name: cell(rec, "name"), Segment: cell(rec, "segment"),
			Manager: cell(rec, "manager"), Phones: splitList(cell(rec, "phones")), Partners: splitList(cell(rec, "partners"))})
	}
	if len(rows) == 0 {
		return nil, importProblem("import.no_clients")
	}
	return rows, nil
}

// importProblem is why a file can't be imported at all.
func importProblem(id string, args ...any) *pageError {
	return &pageError{Status: http.StatusBadRequest, ID: id, Args: args}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.FieldsFunc(s, func(r rune) bool { return r == ';' || r == '|' }) {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// runImport creates the rows' clients in order; a bad row is reported and
// skipped, the others are imported.
func (c *Console) runImport(ctx context.Context, lc *locale, job *importJob, caller apiCaller, rows []importRow, ppl people, actor string) {
	byUsername := map[string]storage.Manager{}
	for _, m := range ppl {
		if m.Status == storage.StatusActive {
			byUsername[strings.ToLower(m.SIPUsername)] = m
		}
	}
	resolve := func(ref string) (storage.Manager, bool) {
		if m, ok := byUsername[strings.ToLower(ref)]; ok {
			return m, true
		}
		m, ok := ppl[ref]
		return m, ok && m.Status == storage.StatusActive
	}
	shared := time.Now()
	for _, row := range rows {
		if time.Since(shared) >= importShareEvery {
			c.imports.save(ctx, job)
			shared = time.Now()
		}
		if ctx.Err() != nil {
			job.update(func(p *importProgress) { p.Fatal = lc.t("import.timeout") })
			break
		}
		created, msg := c.importOne(ctx, lc, caller, row, resolve)
		job.update(func(p *importProgress) {
			p.Done++
			if msg != "" {
				p.Failed++
				p.Errors = append(p.Errors, rowError{Line: row.Line, Name: row.Name, Message: upperFirst(msg)})
				return
			}
			p.Imported++
			p.Created = append(p.Created, created)
		})
	}
	p := job.progress()
	job.update(func(p *importProgress) { p.Finished = true })
	c.imports.save(context.WithoutCancel(ctx), job)
	c.logger.Info("console: import finished", zap.String("job", job.ID), zap.String("actor", actor),
		zap.Int("imported", p.Imported), zap.Int("failed", p.Failed))
}

// importOne creates one row's client; msg says why not.
func (c *Console) importOne(ctx context.Context, lc *locale, caller apiCaller, row importRow,
	resolve func(string) (storage.Manager, bool)) (createdAt, string) {
	switch {
	case row.Name == "":
		return createdAt{}, lc.t("import.row_no_name")
	case len(row.Phones) == 0:
		return createdAt{}, lc.t("import.row_no_phone")
	case row.Manager == "":
		return createdAt{}, lc.t("import.row_no_manager")
	}
	m, ok := resolve(row.Manager)
	if !ok {
		return createdAt{}, lc.t("import.row_unknown_manager", "Name", clipText(row.Manager, 40))
	}
	partners := []string{}
	var partnerNames []string
	for _, ref := range row.Partners {
		p, ok := resolve(ref)
		if !ok {
			return createdAt{}, lc.t("import.row_unknown_partner", "Name", clipText(ref, 40))
		}
		partners = append(partners, p.ID)
		partnerNames = append(partnerNames, p.Name)
	}
	var out struct {
		ID   string `json:"id"`
		Code string `json:"code"`
	}
	err := caller.do(ctx, http.MethodPost, "/api/v1/clients", map[string]any{"name": row.Name, "phones": row.Phones,
		"segment": row.Segment, "manager_id": m.ID, "partner_ids": partners}, &out)
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		return createdAt{}, ae.Message
	case err != nil:
		c.logger.Error("console: import row failed", zap.Int("line", row.Line), zap.Error(err))
		return createdAt{}, lc.t("error.internal")
	}
	return createdAt{Line: row.Line, ID: out.ID, Code: out.Code, Name: row.Name, ManagerName: m.Name,
		PartnerNames: strings.Join(partnerNames, ", "), SegmentOrNothing: row.Segment}, ""
}

// upperFirst makes a message a sentence: the API's messages start in
// lower case.
func upperFirst(s string) string {
	r, size := utf8.DecodeRuneInString(s)
	return string(unicode.ToUpper(r)) + s[size:]
}

func clipText(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "…"
}

func (c *Console) importJobPage(w http.ResponseWriter, r *http.Request, s *session) error {
	job, ok := c.imports.get(r.Context(), r.PathValue("id"))
	if !ok {
		return &pageError{Status: http.StatusNotFound, ID: "import.no_job"}
	}
	return c.render(w, r, s, "import_job", c.localeFor(r, s).t("import.job_title", "File", job.FileName), "clients",
		importView{Job: job, P: job.progress()})
}

func (c *Console) importProgress(w http.ResponseWriter, r *http.Request, s *session) error {
	job, ok := c.imports.get(r.Context(), r.PathValue("id"))
	if !ok {
		return &pageError{Status: http.StatusNotFound, ID: "import.no_job"}
	}
	writeJSON(w, http.StatusOK, job.progress())
	return nil
}
