-- Listing: orgs, projects and fleets are paged newest first by (created_at, id), optionally
-- filtered on an exact name; each page is one range scan of one of these indexes. A fleet's name
-- lives in its stored document, so its indexes are on the extracted name.

CREATE INDEX orgs_by_created ON orgs(created_at, id);
CREATE INDEX orgs_by_name ON orgs(name, created_at, id);
CREATE INDEX projects_by_org ON projects(org_id, created_at, id);
CREATE INDEX projects_by_name ON projects(org_id, name, created_at, id);
CREATE INDEX fleets_by_created ON fleets(created_at, id);
CREATE INDEX fleets_by_project ON fleets(project_id, created_at, id);
CREATE INDEX fleets_by_name ON fleets(json_extract(spec, '$.name'), created_at, id);
CREATE INDEX fleets_by_project_name ON fleets(project_id, json_extract(spec, '$.name'), created_at, id);
