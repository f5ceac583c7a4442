class Session {
    //
    // Session is a class to implement expiring session data.
    // a session is created, with a session id, which is stored in the class
    // the data is available in Session.data.. When the data is modified
    // and the updateSession method is called, the session is updated and its expiry is
    // reset
    //
    // Most of the methods are async and need to be called accordingly.
    // To properly create a session use:
    // Session.create(user, options)
    //
    // Options are:
    // options = {
    // base_url: the base portion of the url for url construction
    // data: javascript object of initial session data
    // auth: this is the apikey configured and sent in headers as a bearer token
    // }
    constructor(user, user_options) {
        this.options = {
            'base_url': "http://hp.ducksfeet.com:6123/sessman",
            'auth': null,
            'data': {},
        }
        if (user_options && typeof user_options == 'object')
            Object.assign(this.options, user_options);
        this.base_url = this.options.base_url;
        this.user = user;
        this.data = this.options.data;
        console.log('base_url',this.base_url,'user',this.user,'data', this.data);
    }

    static async create(user, options) {
        const instance = new Session(user, options);
        await instance.createSession();
        return instance;
    }

    get_command_url(command, parameters) {
        // take object parameters and create a query string
        // then create the url for the endppoint
        let qry_str = '';
        if (parameters && typeof parameters === 'object') {
            Object.keys(parameters).forEach(k => {
                if (qry_str)
                    qry_str = `${parms}&${k}=${parameters[k]}`;
                else
                    qry_str = `${k}=${parameters[k]}`;
            });
        }
        return `${this.base_url}/${command}?${qry_str}`;
    }

    async get_data(cmd, parameters, data) {
        let rdata = undefined;
        let method = 'POST';
        let body = "";
        let url = this.get_command_url(cmd, parameters);
        let headers = {'Content-type': 'text/javascript'}
        if (data !== undefined) {
            body = JSON.stringify({ 'data': data });
        }
        if (this.options.auth)
            headers['Authorization'] = `Bearer ${self.options.auth}`
        console.log(`get_data: [url=${url}]`)
        console.log(`get_data: [headers=${JSON.stringify(headers)}]`)
        console.log(`get_data: [data=${JSON.stringify(data)}]`)
        const response = await fetch(url, {
            'headers': headers,
            'method': method,
            'body': body
        });
        if (response.ok) {
            try {
                const responseText = await response.text(); // Read the response body as text
                const jsonData = JSON.parse(responseText); // Then parse it as JSON
                return jsonData;
            } catch (e) {
                console.error("Error parsing JSON:", e);
                const textData = await response.text();
                return textData;
            }
        }
        console.error(`Request failed with status: ${response.status}`);
        return null;
    }

    async createSession() {
        const rdata = await this.get_data('new', { 'user': this.user }, this.data); // Pass this.data as the request body
        if (typeof rdata == 'object') {
            console.log('Create session, data:', rdata);
            if (rdata && rdata.session_id && rdata.data) {
                this.session_id = rdata.session_id;
                this.data = rdata.data;
            } else {
                console.error("Error: Invalid data received during session creation: ", rdata);
            }
        }
    }

    async updateSession() {
        const rdata = await this.get_data('update', { 'session_id': this.session_id }, this.data);
        if (rdata && rdata.data) {
            this.data = rdata.data;
        } else {
            console.error("Error: Invalid data received during session update.");
        }
    }
}
