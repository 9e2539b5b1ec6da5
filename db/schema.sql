-- The app's database: the `public` schema of its Supabase project, as far as this project
-- uses it. Safe to run again: every statement is IF NOT EXISTS or CREATE OR REPLACE.
--
-- Read by `ingest` (source.kind=postgres): profiles, music_preferences, interactions.
-- Written by `export` (sink.url): matches. The batch job never reads name, avatar_url or
-- bio: they stay in the app's database.

-- gen_random_uuid() is built into PostgreSQL 13 and later.

-- One row per account. Soft delete: deleted_at set (the lake erases the account); banned
-- accounts stay in the database but are never matched and are erased from the lake.
CREATE TABLE IF NOT EXISTS public.profiles (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),  -- kept current by a trigger
    name                text,
    avatar_url          text,
    setup_complete      boolean NOT NULL DEFAULT false,
    birth_date          date,
    gender              text,
    sexual_orientation  text,
    looking_for         text[],          -- the genders sought; empty: derived from orientation
    age_min             integer,         -- match settings, all optional: the ages to see ...
    age_max             integer,
    max_distance_km     double precision, -- ... and how far away
    city                text,
    region              text,
    latitude            double precision,
    longitude           double precision,
    bio                 text,
    interests           text[],
    relationship_goal   text,
    education_level     text,
    job_title           text,
    height_cm           numeric,
    drinking_habits     text,
    smoking_habits      text,
    deleted_at          timestamptz,     -- soft delete
    banned              boolean NOT NULL DEFAULT false
);

-- The match settings came later: a database made before them gets the columns here.
ALTER TABLE public.profiles ADD COLUMN IF NOT EXISTS age_min integer;
ALTER TABLE public.profiles ADD COLUMN IF NOT EXISTS age_max integer;
ALTER TABLE public.profiles ADD COLUMN IF NOT EXISTS max_distance_km double precision;

CREATE TABLE IF NOT EXISTS public.music_preferences (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz,
    user_id      uuid NOT NULL REFERENCES public.profiles (id),
    genre        text,
    artist_name  text
);

-- What users did: user_id acted on target_id.
CREATE TABLE IF NOT EXISTS public.interactions (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz,
    user_id     uuid NOT NULL REFERENCES public.profiles (id),  -- who acted
    target_id   uuid NOT NULL REFERENCES public.profiles (id),  -- on whom
    action      text NOT NULL CHECK (action IN ('like', 'pass', 'match', 'message', 'block'))
);

-- What the app reads: each user's ranked matches of the newest published run. `export`
-- replaces all rows in one transaction (DELETE + INSERT), so readers see one whole run,
-- and grants, policies and indexes set on this table stay.
CREATE TABLE IF NOT EXISTS public.matches (
    user_id        uuid,
    rank           int,
    profile_id     uuid,
    score          real,
    model_version  text,
    run_id         text,
    generated_at   timestamptz,
    PRIMARY KEY (user_id, rank)
);

-- updated_at moves on every UPDATE, whatever the client sends: incremental reads
-- (rows changed since the last high-water mark) depend on it.
CREATE OR REPLACE FUNCTION public.set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE OR REPLACE TRIGGER profiles_set_updated_at
    BEFORE UPDATE ON public.profiles
    FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();
CREATE OR REPLACE TRIGGER music_preferences_set_updated_at
    BEFORE UPDATE ON public.music_preferences
    FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();
CREATE OR REPLACE TRIGGER interactions_set_updated_at
    BEFORE UPDATE ON public.interactions
    FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();

-- Incremental reads filter on updated_at.
CREATE INDEX IF NOT EXISTS profiles_updated_at_idx ON public.profiles (updated_at);
CREATE INDEX IF NOT EXISTS music_preferences_updated_at_idx ON public.music_preferences (updated_at);
CREATE INDEX IF NOT EXISTS interactions_updated_at_idx ON public.interactions (updated_at);
