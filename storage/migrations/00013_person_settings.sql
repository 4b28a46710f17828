-- +goose Up
-- A person's own language and time zone for the console and his phone's
-- display text. Empty: the browser's Accept-Language, then the company's
-- --default-language; the company's --timezone. Both are checked by the
-- application (supported language codes, IANA zone names).
ALTER TABLE managers
    ADD COLUMN language  text NOT NULL DEFAULT '' CHECK (length(language) <= 16),
    ADD COLUMN time_zone text NOT NULL DEFAULT '' CHECK (length(time_zone) <= 64);

-- +goose Down
ALTER TABLE managers DROP COLUMN time_zone, DROP COLUMN language;
