module herald.local/pause

go 1.22
