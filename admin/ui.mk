# Admin UI assets (included from the top-level Makefile; paths are relative to the repo root).
#
#   make ui        install the pinned npm packages (admin/ui/package-lock.json) and vendor the
#                  charting library into admin/ui/static/vendor/ (committed; `go build` needs no npm).
#   make ui-check  rebuild the vendored files into a scratch folder and fail if the committed
#                  copies differ (CI runs this).

ADMIN_UI_DIR    := admin/ui
ADMIN_UI_VENDOR := $(ADMIN_UI_DIR)/static/vendor
ADMIN_UI_FILES  := uPlot.iife.min.js uPlot.min.css

.PHONY: ui ui-check

ui:
	cd $(ADMIN_UI_DIR) && npm ci --no-audit --no-fund
	mkdir -p $(ADMIN_UI_VENDOR)
	for f in $(ADMIN_UI_FILES); do cp $(ADMIN_UI_DIR)/node_modules/uplot/dist/$$f $(ADMIN_UI_VENDOR)/$$f; done

ui-check:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	cp $(ADMIN_UI_DIR)/package.json $(ADMIN_UI_DIR)/package-lock.json "$$tmp"/; \
	(cd "$$tmp" && npm ci --no-audit --no-fund --silent); \
	for f in $(ADMIN_UI_FILES); do \
		cmp -s "$$tmp/node_modules/uplot/dist/$$f" $(ADMIN_UI_VENDOR)/$$f || \
			{ echo "ui-check: $(ADMIN_UI_VENDOR)/$$f is out of date; run 'make ui' and commit" >&2; exit 1; }; \
	done; \
	echo "ui-check: vendored UI assets are up to date"
